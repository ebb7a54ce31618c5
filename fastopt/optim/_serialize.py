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
import os

import numpy as np

from ..checkpoint import CheckpointError

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


def _meta(arrays):
    """The JSON metadata entry, checked to have the layout state_to_arrays writes."""
    if _META not in arrays:
        raise ValueError(f"not a fastopt optimizer state: no {_META!r} entry")
    entry = np.asarray(arrays[_META])
    if entry.shape != () or entry.dtype.kind != "U":
        raise ValueError(f"not a fastopt optimizer state: {_META!r} must be a 0-d str array, "
                         f"got dtype {entry.dtype} and shape {entry.shape}")
    try:
        meta = json.loads(str(entry[()]))
    except ValueError as exc:   # json.JSONDecodeError
        raise ValueError(f"not a fastopt optimizer state: {_META!r} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"not a fastopt optimizer state (expected format {FORMAT!r})")
    if not isinstance(meta.get("param_groups"), list):
        raise ValueError("optimizer state: 'param_groups' must be a list")
    if not isinstance(meta.get("state"), dict):
        raise ValueError("optimizer state: 'state' must be a dict")
    for index, scalars in meta["state"].items():
        if not index.isdigit() or not isinstance(scalars, dict):
            raise ValueError(f"optimizer state: entry {index!r} of 'state' must be a parameter "
                             f"index mapping to a dict")
    return meta


def state_from_arrays(arrays):
    """The state dict back from a `state_to_arrays` mapping (or the NpzFile np.load returns).

    ValueError (naming what is wrong) for anything that state_to_arrays does not write.
    """
    meta = _meta(arrays)
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


def _describe_file(file):
    try:
        return repr(os.fspath(file))
    except TypeError:
        return repr(getattr(file, "name", file))


def load_state(file, optimizer):
    """Load a `save_state` file into `optimizer` (validated fully before anything changes).

    A file that is not a readable `save_state` .npz (corrupt, truncated, another program's, with
    pickled objects) raises fastopt.checkpoint.CheckpointError (a ValueError) naming the file and
    what is wrong; a state that does not fit `optimizer` raises its load_state_dict's error.
    """
    name = _describe_file(file)
    try:
        data = np.load(file, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array (.npy), not an optimizer state .npz")
        with data:
            state_dict = state_from_arrays({key: data[key] for key in data.files})
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:   # BadZipFile, EOFError, zlib errors, pickled objects, bad layout
        raise CheckpointError(f"optimizer state file {name} cannot be loaded: "
                              f"{type(exc).__name__}: {exc}") from exc
    optimizer.load_state_dict(state_dict)
