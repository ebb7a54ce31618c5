"""A FullyConnectedNet drawing its dropout masks from any NumPy bit generator reloads its own
state_dict and continues the same stream; a state of another generator kind is refused with nothing
changed (the state is checked on a copy of the model's own generator: the file never picks one)."""
import numpy as np
import pytest

from fastopt.nn import FullyConnectedNet


def _same(a, b):
    # bit-generator states are dicts of ints, strings and (Philox, SFC64, MT19937) arrays
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b


def _model(bit_generator):
    return FullyConnectedNet([6], input_dim=5, num_classes=3, dropout_keep_ratio=0.5,
                             rng=np.random.Generator(bit_generator), dtype=np.float64)


@pytest.mark.parametrize("kind", [np.random.Philox, np.random.SFC64, np.random.MT19937, np.random.PCG64DXSM])
def test_a_non_default_bit_generator_round_trips_and_continues_its_stream(kind):
    X, y = np.random.default_rng(0).standard_normal((4, 5)), np.array([0, 1, 2, 1])
    a = _model(kind(7))
    a.loss(X, y)
    saved = a.state_dict()
    b = _model(kind(99))
    b.load_state_dict(saved)
    assert _same(b.rng.bit_generator.state, a.rng.bit_generator.state)
    la, ga = a.loss(X, y)
    lb, gb = b.loss(X, y)        # the same dropout masks: the same loss and gradients
    assert la == lb and all(np.array_equal(ga[k], gb[k]) for k in ga)


def _refused_unchanged(target, state, match):
    before = target.state_dict()
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(state)
    after = target.state_dict()
    assert _same(after["rng"], before["rng"])
    assert all(np.array_equal(after["params"][k], before["params"][k]) for k in before["params"])


def test_a_state_of_another_generator_kind_is_refused_with_nothing_changed():
    pcg = _model(np.random.PCG64(1)).state_dict()
    _refused_unchanged(_model(np.random.Philox(2)), pcg, "model state rng is not a valid Philox state")


@pytest.mark.parametrize("where", ["top", "nested"])
def test_a_state_with_keys_its_generator_does_not_have_is_refused_with_nothing_changed(where):
    # NumPy's state setter ignores keys it does not read; the model refuses them (nothing changed).
    saved = _model(np.random.PCG64(1)).state_dict()
    (saved["rng"] if where == "top" else saved["rng"]["state"])["note"] = [1, 2]
    _refused_unchanged(_model(np.random.PCG64(2)), saved, "model state rng is not a valid PCG64 state: unexpected keys")
