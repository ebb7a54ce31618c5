"""Fuzz the public API: random arguments (wrong types, dtypes, shapes, NaN, huge ints, None, strings,
nested lists, read-only and non-contiguous arrays) at every public function of fastopt.layers, the
CS231n update rules of fastopt.optim, fastopt.gradcheck and fastopt.checkpoint, and through the layers,
the rules and FullyConnectedNet.loss at the compiled kernels. Each call must succeed or raise TypeError/ValueError (for functions
taking a path, also OSError: a missing file is FileNotFoundError by design); when it raises, nothing
it was given may have changed (bitwise), nor NumPy's global RNG, nor any file.

Every argument slot draws either a valid value (so that calls get deep into the validation) or a
hostile one. Bounded: hypothesis max_examples per function (40; FASTOPT_FUZZ_EXAMPLES=400 for a
deeper run), no deadline.
"""
import os
import tempfile
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastopt import checkpoint, gradcheck, layers, optim
from fastopt.optim import functional

ALLOWED = (TypeError, ValueError)
FUZZ = settings(max_examples=int(os.environ.get("FASTOPT_FUZZ_EXAMPLES", 40)), deadline=None, suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------------------------------------------
# hostile values: factories, so that every example gets fresh objects


def _ro(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def _strided(shape, dtype=np.float64):
    return np.ones(tuple(2 * s for s in shape), dtype)[tuple(slice(None, None, 2) for _ in shape)]


HOSTILE = [
    lambda: None, lambda: True, lambda: 0, lambda: -1, lambda: 10**400, lambda: -(10**400),
    lambda: 2**64, lambda: 1.5, lambda: float("nan"), lambda: float("inf"), lambda: -float("inf"),
    lambda: 1e308, lambda: "x", lambda: "", lambda: "train", lambda: b"bytes", lambda: [],
    lambda: [1, 2], lambda: [[1.0, 2.0], [3.0]], lambda: [[1.0, 2.0], [3.0, 4.0]], lambda: {},
    lambda: {"mode": "train"}, lambda: {"p": "x", "mode": None}, lambda: (1, 2, 3), lambda: object(),
    lambda: 1 + 2j, lambda: Fraction(1, 3), lambda: np.float64("nan"), lambda: np.int64(2**62),
    lambda: np.float32(3),
    # arrays of the wrong kind, shape or layout
    lambda: np.arange(12).reshape(3, 4), lambda: np.ones((3, 4), np.complex128),
    lambda: np.ones((3, 4), bool), lambda: np.array([None, 1], dtype=object),
    lambda: np.array(2.0), lambda: np.empty((0, 4)), lambda: np.empty((4, 0), np.float32),
    lambda: np.ones(4), lambda: np.ones((2, 3, 4, 5)), lambda: np.ones((4, 3)), lambda: np.ones((3, 4)),
    lambda: np.ones((3, 4), np.float32), lambda: np.full((3, 4), np.nan), lambda: np.full((3, 4), 1e300),
    lambda: _ro(np.ones((3, 4))), lambda: _strided((3, 4)), lambda: np.asfortranarray(np.ones((3, 4))),
    lambda: np.ones((4, 5)), lambda: np.ones((2, 3, 2, 2)), lambda: np.zeros(4, np.int64),
    lambda: np.array([0, 1, 7, -1]), lambda: np.ones(4, np.uint8), lambda: np.ones((4, 5), np.uint8) * 2,
]
hostile = st.sampled_from(HOSTILE).map(lambda make: make())


# ---------------------------------------------------------------------------------------------------
# snapshots: everything reachable from the arguments, compared bitwise


def snap(value, depth=0):
    if isinstance(value, np.ndarray):
        data = value.tobytes() if value.dtype != object else repr(value.tolist())
        return ("array", value.dtype.str, value.shape, value.strides, value.flags.writeable, data)
    if depth > 6:
        return ("deep", id(value))
    if isinstance(value, dict):
        return ("dict", [(repr(k), snap(v, depth + 1)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [snap(v, depth + 1) for v in value])
    if isinstance(value, layers.normalization.NormCache):
        return ("NormCache", [snap(getattr(value, s), depth + 1) for s in value.__slots__])
    if isinstance(value, float) and value != value:
        return ("nan",)
    if isinstance(value, (int, float, complex, str, bytes, bool, type(None), Fraction, np.generic)):
        return ("value", type(value).__name__, repr(value))
    return ("object", id(value))


def global_state():
    state = np.random.get_state()
    return state[0], state[1].tobytes(), state[2:]


def files(directory):
    found = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                found[name] = f.read()
    return found


def check_call(fn, args, *, allowed=ALLOWED, directory=None):
    before = snap(list(args)), global_state(), files(directory) if directory else None
    try:
        fn(*args)
    except allowed:
        after = snap(list(args)), global_state(), files(directory) if directory else None
        assert after[0] == before[0], f"{fn.__name__} raised but changed its arguments"
        assert after[1] == before[1], f"{fn.__name__} raised but advanced NumPy's global RNG"
        assert after[2] == before[2], f"{fn.__name__} raised but changed a file"


# ---------------------------------------------------------------------------------------------------
# valid arguments per function (fresh for every example)


def _rng():
    return np.random.default_rng(0)


def _x(*shape, dtype=np.float64):
    return _rng().standard_normal(shape).astype(dtype)


def _affine():
    return [_x(4, 3, 2), _x(6, 5), _x(5)]


def _bn_param():
    return {"mode": "train", "eps": 1e-5, "momentum": 0.9}


def _backward(forward, fwd_args, dout_shape):
    def make():
        _, cache = forward(*fwd_args())
        return [_x(*dout_shape), cache]
    return make


LAYERS = {
    "affine_forward": _affine,
    "affine_relu_forward": _affine,
    "relu_forward": lambda: [_x(3, 4)],
    "softmax_loss": lambda: [_x(4, 5), np.array([0, 1, 4, 2])],
    "svm_loss": lambda: [_x(4, 5), np.array([0, 1, 4, 2])],
    "dropout_forward": lambda: [_x(3, 4), {"p": 0.5, "mode": "train", "seed": 0}],
    "dropout_backward": _backward(layers.dropout_forward, lambda: [_x(3, 4), {"p": 0.5, "mode": "train",
                                                                             "seed": 0}], (3, 4)),
    "batchnorm_forward": lambda: [_x(4, 3), _x(3), _x(3), _bn_param()],
    "batchnorm_backward": _backward(layers.batchnorm_forward, lambda: [_x(4, 3), _x(3), _x(3), _bn_param()],
                                    (4, 3)),
    "batchnorm_backward_alt": _backward(layers.batchnorm_forward,
                                        lambda: [_x(4, 3), _x(3), _x(3), _bn_param()], (4, 3)),
    "spatial_batchnorm_forward": lambda: [_x(2, 3, 2, 2), _x(3), _x(3), _bn_param()],
    "spatial_batchnorm_backward": _backward(layers.spatial_batchnorm_forward,
                                            lambda: [_x(2, 3, 2, 2), _x(3), _x(3), _bn_param()], (2, 3, 2, 2)),
    "layernorm_forward": lambda: [_x(4, 3), _x(3), _x(3), {"eps": 1e-5}],
    "layernorm_backward": _backward(layers.layernorm_forward, lambda: [_x(4, 3), _x(3), _x(3), {}], (4, 3)),
    "affine_backward": _backward(layers.affine_forward, _affine, (4, 5)),
    "relu_backward": _backward(layers.relu_forward, lambda: [_x(3, 4)], (3, 4)),
    "affine_relu_backward": _backward(layers.affine_relu_forward, _affine, (4, 5)),
    "spatial_groupnorm_forward": lambda: [_x(2, 4, 2, 2), _x(4), _x(4), 2, {"eps": 1e-5}],
    "spatial_groupnorm_backward": _backward(layers.spatial_groupnorm_forward,
                                            lambda: [_x(2, 4, 2, 2), _x(4), _x(4), 2, {"eps": 1e-5}],
                                            (2, 4, 2, 2)),
}


def _activation_layers():
    """The activation layer functions of the table (relu's are core's, already above)."""
    found = {}
    for spec in layers.activations.ACTIVATIONS.values():
        if spec.name == "relu":
            continue
        fwd_args = (lambda: [_x(3, 4)]) if spec.param is None else (lambda d=spec.default: [_x(3, 4), d])
        found[spec.forward_kernel] = fwd_args
        found[spec.backward_kernel] = _backward(getattr(layers, spec.forward_kernel), fwd_args, (3, 4))
    return found


LAYERS.update(_activation_layers())
assert set(LAYERS) == set(layers.__all__), sorted(set(layers.__all__) ^ set(LAYERS))

RULE_CONFIG_KEYS = {
    "sgd": ["learning_rate"],
    "sgd_momentum": ["learning_rate", "momentum", "velocity"],
    "nesterov_momentum": ["learning_rate", "momentum", "velocity"],
    "adagrad": ["learning_rate", "epsilon", "cache"],
    "rmsprop": ["learning_rate", "decay_rate", "epsilon", "cache"],
    "adam": ["learning_rate", "beta1", "beta2", "epsilon", "m", "v", "t"],
}
RULES = sorted(RULE_CONFIG_KEYS)


def _f(v):
    return float(np.sum(v ** 2))


GRADCHECK = {
    "eval_numerical_gradient": lambda: [_f, _x(2, 3), False, 1e-5],
    "eval_numerical_gradient_array": lambda: [lambda v: v * 2.0, _x(2, 3), _x(2, 3), 1e-5],
    "rel_error": lambda: [_x(2, 3), _x(2, 3)],
    "grad_check_sparse": lambda: [_f, _x(2, 3), _x(2, 3), 3, 1e-5, 0, False],
}
assert set(GRADCHECK) == set(gradcheck.__all__)

hostile_f = st.sampled_from([None, 3, "f", np.sum, lambda v: "text", lambda v: None, lambda v: [1, 2],
                             lambda v: np.ones(3), lambda v: {"a": 1}])


def draw_args(data, valid, hostile_slots=None, slot_strategies=None):
    """Each slot: the valid value, or (about one time in three) a hostile one."""
    args = []
    for i, value in enumerate(valid):
        if hostile_slots is not None and i not in hostile_slots:
            args.append(value)
            continue
        if data.draw(st.integers(0, 2), label=f"hostile slot {i}?") == 0:
            strategy = (slot_strategies or {}).get(i, hostile)
            args.append(data.draw(strategy, label=f"slot {i}"))
        else:
            args.append(value)
    return args


# ---------------------------------------------------------------------------------------------------
# the fuzz tests


def forge(data, cache, depth=0):
    """A forged cache: the valid `cache` with one part (at any depth of its tuples, or one NormCache
    field) replaced by a hostile value, or (at the top) a hostile value instead of the cache."""
    where = f"cache part at depth {depth}"
    if isinstance(cache, tuple) and cache and data.draw(st.booleans(), label=f"forge inside ({where})?"):
        i = data.draw(st.integers(0, len(cache) - 1), label=where)
        return cache[:i] + (forge(data, cache[i], depth + 1),) + cache[i + 1:]
    if isinstance(cache, layers.normalization.NormCache) and data.draw(st.booleans(), label="forge a field?"):
        fields = {f: getattr(cache, f) for f in cache.__slots__}
        field = data.draw(st.sampled_from(sorted(fields)), label="NormCache field")
        return layers.normalization.NormCache(**dict(fields, **{field: data.draw(hostile, label=field)}))
    return data.draw(hostile, label=where)


@pytest.mark.parametrize("name", sorted(LAYERS))
@FUZZ
@given(data=st.data())
def test_fuzz_layers(name, data):
    """Every layer function of layers.__all__; a backward's cache slot, when hostile, is a forged
    version of a real cache (a part or a field replaced) as often as an unrelated value."""
    valid = LAYERS[name]()
    args = draw_args(data, valid)
    if name.endswith("_backward") and args[1] is not valid[1] and data.draw(st.booleans(), label="forge?"):
        args[1] = forge(data, valid[1])
    check_call(getattr(layers, name), args)


def _config(data, rule):
    """None, a hostile value, or a dict with hostile values under some of the rule's keys."""
    kind = data.draw(st.integers(0, 3), label="config kind")
    if kind == 0:
        return None
    if kind == 1:
        return data.draw(hostile, label="config")
    keys = data.draw(st.lists(st.sampled_from(RULE_CONFIG_KEYS[rule]), max_size=3, unique=True), label="keys")
    return {key: data.draw(hostile, label=key) for key in keys}


@pytest.mark.parametrize("rule", RULES)
@FUZZ
@given(data=st.data())
def test_fuzz_update_rules(rule, data):
    w, dw = _x(3, 4), _x(3, 4)
    args = draw_args(data, [w, dw]) + [_config(data, rule)]
    check_call(getattr(functional, rule), args)
    assert getattr(optim, rule) is getattr(functional, rule)


@pytest.mark.parametrize("name", sorted(GRADCHECK))
@FUZZ
@given(data=st.data())
def test_fuzz_gradcheck(name, data):
    valid = GRADCHECK[name]()
    special = {0: hostile_f} if name != "rel_error" else {}
    check_call(getattr(gradcheck, name), draw_args(data, valid, slot_strategies=special))


CHECKPOINT_OBJECTS = [lambda: {"w": np.ones(3), "lr": 0.1}, lambda: [1, "a", None], lambda: np.ones(2),
                      lambda: {"f": Fraction(1, 2)}, lambda: {"fn": os.getcwd}, lambda: lambda: 0,
                      lambda: object(), lambda: {"cls": ValueError}, lambda: np.array([object()])]
checkpoint_objects = st.sampled_from(CHECKPOINT_OBJECTS).map(lambda make: make())


def _paths(directory):
    return st.sampled_from(["c.ckpt", "missing.ckpt", "corrupt.ckpt", "empty.ckpt", "sub", ""]).map(
        lambda n: os.path.join(directory, n))


@pytest.mark.parametrize("name", ["save", "load", "dumps", "loads", "atomic_write_bytes",
                                  "remove_orphan_temporaries"])
@FUZZ
@given(data=st.data())
def test_fuzz_checkpoint(name, data):
    with tempfile.TemporaryDirectory() as directory:
        checkpoint.save(os.path.join(directory, "c.ckpt"), {"w": np.arange(3.0)})
        with open(os.path.join(directory, "corrupt.ckpt"), "wb") as f:
            f.write(checkpoint.dumps({"a": 1})[:-3])
        open(os.path.join(directory, "empty.ckpt"), "wb").close()
        os.mkdir(os.path.join(directory, "sub"))
        path = data.draw(_paths(directory) | hostile, label="path")
        obj = data.draw(checkpoint_objects | hostile, label="obj")
        blob = data.draw(st.sampled_from([checkpoint.dumps({"a": 1}), b"", b"junk"]) | hostile, label="data")
        args = {"save": [path, obj], "load": [path], "dumps": [obj], "loads": [blob, "src"],
                "atomic_write_bytes": [path, blob], "remove_orphan_temporaries": [path]}[name]
        # A hostile str path ("x", "train") is relative: run inside the temporary directory, so
        # that a write lands there (and is seen by the file snapshot), never in the repository.
        cwd = os.getcwd()
        os.chdir(directory)
        try:
            check_call(getattr(checkpoint, name), args, allowed=ALLOWED + (OSError,), directory=directory)
        finally:
            os.chdir(cwd)


def _model_state(model):
    # model.rng is None for a CS231n-seeded model (seed=): its masks come from the seed, and NumPy's
    # global state is compared by check_call.
    return {"params": {k: v for k, v in model.params.items()}, "bn": model.bn_params,
            "dropout": model.dropout_params, "rng": None if model.rng is None else model.rng.bit_generator.state}


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
@pytest.mark.parametrize("keep", [1.0, 0.5])
@pytest.mark.parametrize("seeding", ["rng", "seed"])
@FUZZ
@given(data=st.data())
def test_fuzz_model_loss(normalization, keep, seeding, data):
    """FullyConnectedNet.loss is the Python wrapper of the fused MLP kernels (fastopt._mlp_kernels):
    hostile X / y must be refused with TypeError/ValueError and change neither them nor the model."""
    from fastopt import FullyConnectedNet
    model = FullyConnectedNet([5], input_dim=4, num_classes=3, normalization=normalization,
                              dropout_keep_ratio=keep, dtype=np.float64, **{seeding: 0})
    args = draw_args(data, [_x(6, 4), np.array([0, 1, 2, 0, 1, 2])])
    if data.draw(st.booleans(), label="test mode (no y)"):
        args = args[:1]
    before = snap(_model_state(model))
    try:
        model.loss(*args)
    except ALLOWED:
        assert snap(_model_state(model)) == before, "loss raised but changed the model"
        check_call(model.loss, args)   # and the arguments are unchanged


CORE_BACKWARD = {"affine_backward": ((4, 5), _affine), "relu_backward": ((3, 4), lambda: [_x(3, 4)]),
                 "affine_relu_backward": ((4, 5), _affine)}


@pytest.mark.parametrize("name", sorted(CORE_BACKWARD))
def test_forged_core_caches_are_refused(name):
    """The caches that once raised AttributeError (fastopt/layers/core.py used them unchecked) now
    raise TypeError/ValueError naming the cache and the forward that makes it."""
    shape, fwd_args = CORE_BACKWARD[name]
    _, real = getattr(layers, name.replace("backward", "forward"))(*fwd_args())
    forged = [None, (1, 2, 3), [np.ones(2)], "cache", ((1, 2, 3), 4), (np.ones(3), np.ones(3)),
              (np.ones((4, 6)), np.ones((5, 5)), np.ones(5)), np.ones((3, 4), complex)]
    if name == "affine_relu_backward":
        forged += [(real[0], None), (real[0][:2], real[1]), ((real[0][0], real[0][1], np.ones(2)), real[1])]
    for cache in forged:
        with pytest.raises((TypeError, ValueError), match=r"cache.*_forward"):
            getattr(layers, name)(_x(*shape), cache)
