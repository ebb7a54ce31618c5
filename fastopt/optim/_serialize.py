"""Saving optimizer state with np.savez: state_dict() flattened to a mapping of name -> ndarray.

np.savez stores only arrays (anything else would need allow_pickle=True to load), so
``state_to_arrays`` splits a state dict into
  "state/<index>/<key>"  one entry per state array (exact dtype and shape), and
  "__meta__"             a 0-d str array holding JSON of everything else: the param groups
                         (hyperparameters, "params" indices, "param_names") and the non-array
                         state entries ("step"). JSON floats round-trip exactly (repr).
``state_from_arrays`` rebuilds the dict (tuples such as betas come back as lists, which the
optimizers accept). ``save_state(file, opt)`` / ``load_state(file, opt)`` wrap both with
np.savez / np.load(allow_pickle=False).
"""
import json

import numpy as np

FORMAT = "fastopt.optim.state/1"
_META = "__meta__"


def state_to_arrays(state_dict):
    """A flat {name: ndarray} mapping of `state_dict` (from Optimizer.state_dict()) for np.savez."""
    arrays, meta_state = {}, {}
    for index, entry in state_dict["state"].items():
        scalars = {}
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                arrays[f"state/{int(index)}/{key}"] = value
            else:
                scalars[key] = value
        meta_state[str(int(index))] = scalars
    meta = {"format": FORMAT, "param_groups": state_dict["param_groups"], "state": meta_state}
    try:
        text = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"state_dict holds a value np.savez cannot store as plain data: {exc}") from None
    arrays[_META] = np.array(text)
    return arrays


def state_from_arrays(arrays):
    """The state dict back from a `state_to_arrays` mapping (or the NpzFile np.load returns)."""
    if _META not in arrays:
        raise ValueError(f"not a fastopt optimizer state: no {_META!r} entry")
    meta = json.loads(str(arrays[_META][()]))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"not a fastopt optimizer state (expected format {FORMAT!r})")
    state = {int(index): dict(scalars) for index, scalars in meta["state"].items()}
    for name in arrays:
        if name == _META:
            continue
        parts = name.split("/")
        if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit():
            raise ValueError(f"unexpected entry {name!r} in optimizer state")
        state.setdefault(int(parts[1]), {})[parts[2]] = np.asarray(arrays[name])
    return {"state": state, "param_groups": meta["param_groups"]}


def save_state(file, optimizer):
    """np.savez(file, **state_to_arrays(optimizer.state_dict())): a plain .npz, no pickles."""
    np.savez(file, **state_to_arrays(optimizer.state_dict()))


def load_state(file, optimizer):
    """Load a `save_state` file into `optimizer` (validated fully before anything changes)."""
    with np.load(file, allow_pickle=False) as data:
        state_dict = state_from_arrays({name: data[name] for name in data.files})
    optimizer.load_state_dict(state_dict)
