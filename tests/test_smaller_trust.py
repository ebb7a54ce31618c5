"""Smaller trust defects (issue 8, item 8), each asserted adversarially: the error type, that the
message names the argument, and that nothing given changed (bitwise).

- integers too large for a float (10**400) as any hyperparameter: ValueError, not OverflowError;
- dropout_backward with a forged cache: a clear TypeError/ValueError, not ZeroDivisionError/KeyError;
- gradcheck validates f (callable) and seed;
- `fastopt train` refuses a model or batch that cannot fit in memory, before allocating it.
"""
import copy
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

import fastopt
from fastopt import gradcheck, layers, optim
from fastopt._validation import check_scalar

HUGE = [10**400, -(10**400), Fraction(10**400, 3), 2**1024]


def snapshot(obj):
    """A deep copy whose arrays compare bitwise (dtype, shape, bytes)."""
    return copy.deepcopy(obj)


def assert_same(before, after, path="value"):
    assert type(before) is type(after), path
    if isinstance(before, np.ndarray):
        assert before.dtype == after.dtype and before.shape == after.shape, path
        assert before.tobytes() == after.tobytes(), path
    elif isinstance(before, dict):
        assert before.keys() == after.keys(), path
        for k in before:
            assert_same(before[k], after[k], f"{path}[{k!r}]")
    elif isinstance(before, (list, tuple)):
        assert len(before) == len(after), path
        for i, (a, b) in enumerate(zip(before, after)):
            assert_same(a, b, f"{path}[{i}]")
    else:
        assert before == after or (before != before and after != after), path


# ---------------------------------------------------------------- huge integers


@pytest.mark.parametrize("value", HUGE, ids=["1e400", "-1e400", "Fraction", "2**1024"])
def test_check_scalar_refuses_numbers_beyond_float_range(value):
    with pytest.raises(ValueError, match="lr.*too large for a float"):
        check_scalar("lr", value, low=0.0)


def test_check_scalar_integer_beyond_int64():
    with pytest.raises(ValueError, match="t must be an int in the int64 range"):
        check_scalar("t", 10**400, low=0, integer=True)
    with pytest.raises(ValueError, match="t must be an int in the int64 range"):
        check_scalar("t", -(2**63) - 1, high=5, integer=True)
    assert check_scalar("t", 2**63 - 1, low=0, integer=True) == 2**63 - 1
    assert check_scalar("seed", 2**100, low=0, high=2**128, integer=True) == 2**100
    with pytest.raises(ValueError, match="seed must be <= 5, got 1"):
        check_scalar("seed", 10**50, high=5, integer=True)


def _w(rng):
    return rng.standard_normal((3, 4)), rng.standard_normal((3, 4))


RULE_KEYS = {
    "sgd": ["learning_rate"],
    "sgd_momentum": ["learning_rate", "momentum"],
    "nesterov_momentum": ["learning_rate", "momentum"],
    "adagrad": ["learning_rate", "epsilon"],
    "rmsprop": ["learning_rate", "decay_rate", "epsilon"],
    "adam": ["learning_rate", "beta1", "beta2", "epsilon", "t"],
}


@pytest.mark.parametrize("rule,key", [(r, k) for r, ks in RULE_KEYS.items() for k in ks])
def test_functional_rule_huge_hyperparameter(rng, rule, key):
    w, dw = _w(rng)
    config = {key: 10**400}
    before = snapshot((w, dw, config))
    with pytest.raises(ValueError, match=key):
        getattr(optim, rule)(w, dw, config)
    assert_same(before, (w, dw, config))


@pytest.mark.parametrize("cls,kw", [
    (fastopt.SGD, "lr"), (fastopt.SGD, "momentum"), (fastopt.SGD, "weight_decay"),
    (fastopt.Adam, "lr"), (fastopt.Adam, "eps"), (fastopt.AdamW, "weight_decay"),
    (fastopt.Adagrad, "lr_decay"), (fastopt.RMSprop, "alpha"),
])
def test_optimizer_huge_hyperparameter(rng, cls, kw):
    p = rng.standard_normal(5)
    before = p.copy()
    with pytest.raises(ValueError, match=kw):
        cls([p], **{kw: 10**400})
    assert p.tobytes() == before.tobytes()


@pytest.mark.parametrize("key", ["eps", "momentum"])
def test_batchnorm_huge_hyperparameter(rng, key):
    x, gamma, beta = rng.standard_normal((4, 3)), np.ones(3), np.zeros(3)
    bn_param = {"mode": "train", key: 10**400, "running_mean": np.zeros(3), "running_var": np.ones(3)}
    before = snapshot((x, gamma, beta, bn_param))
    with pytest.raises(ValueError, match=f"bn_param\\['{key}'\\]"):
        layers.batchnorm_forward(x, gamma, beta, bn_param)
    assert_same(before, (x, gamma, beta, bn_param))


def test_dropout_and_gradcheck_huge_hyperparameter(rng):
    x = rng.standard_normal((4, 3))
    state = np.random.get_state()[1].copy()
    with pytest.raises(ValueError, match="dropout_param\\['p'\\]"):
        layers.dropout_forward(x, {"p": 10**400, "mode": "train"})
    assert np.array_equal(np.random.get_state()[1], state)
    before = x.copy()
    with pytest.raises(ValueError, match="h must be finite"):
        gradcheck.eval_numerical_gradient(np.sum, x, verbose=False, h=10**400)
    with pytest.raises(ValueError, match="num_checks"):
        gradcheck.grad_check_sparse(np.sum, x, np.ones_like(x), num_checks=10**400, verbose=False)
    assert x.tobytes() == before.tobytes()


def test_solver_huge_batch_size():
    from _nn_data import blob_data
    from fastopt import FullyConnectedNet, Solver
    model = FullyConnectedNet([4], input_dim=6, num_classes=3, rng=0)
    params = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(ValueError, match="batch_size"):
        Solver(model, blob_data(), batch_size=10**400, verbose=False)
    assert_same(params, dict(model.params))


# ---------------------------------------------------------------- dropout_backward with forged caches


def _real_cache(rng):
    x = rng.standard_normal((5, 4))
    _, cache = layers.dropout_forward(x, {"p": 0.5, "mode": "train", "seed": 1})
    return cache


def forged_caches(rng):
    params, mask = _real_cache(rng)
    return {
        "not a tuple": ([params, mask], TypeError, "cache"),
        "3-tuple": ((params, mask, None), TypeError, "cache"),
        "params not a dict": ((["p", 0.5], mask), TypeError, "cache"),
        "no p": (({"mode": "train"}, mask), ValueError, "'p'"),
        "no mode": (({"p": 0.5}, mask), ValueError, "'mode'"),
        "extra key": (({"p": 0.5, "mode": "train", "seed": 3}, mask), ValueError, "keys"),
        "p zero": (({"p": 0, "mode": "train"}, mask), ValueError, "p"),
        "p negative": (({"p": -0.5, "mode": "train"}, mask), ValueError, "p"),
        "p above one": (({"p": 2.0, "mode": "train"}, mask), ValueError, "p"),
        "p nan": (({"p": float("nan"), "mode": "train"}, mask), ValueError, "p"),
        "p string": (({"p": "0.5", "mode": "train"}, mask), TypeError, "p"),
        "p huge": (({"p": 10**400, "mode": "train"}, mask), ValueError, "p"),
        "mode unknown": (({"p": 0.5, "mode": "eval"}, mask), ValueError, "mode"),
        "mode not str": (({"p": 0.5, "mode": 1}, mask), ValueError, "mode"),
        "mask None": (({"p": 0.5, "mode": "train"}, None), TypeError, "mask"),
        "mask float": (({"p": 0.5, "mode": "train"}, mask.astype(np.float64)), TypeError, "mask"),
        "mask bool": (({"p": 0.5, "mode": "train"}, mask.astype(bool)), TypeError, "mask"),
        "mask list": (({"p": 0.5, "mode": "train"}, mask.tolist()), TypeError, "mask"),
        "mask values 2": (({"p": 0.5, "mode": "train"}, mask * 2 + 1), ValueError, "0 and 1"),
        "mask wrong shape": (({"p": 0.5, "mode": "train"}, mask[:, :2].copy()), ValueError, "dout"),
        "test cache with mask": (({"p": 0.5, "mode": "test"}, mask), ValueError, "mask"),
    }


@pytest.mark.parametrize("case", sorted(forged_caches(np.random.default_rng(0))))
def test_dropout_backward_forged_cache(rng, case):
    cache, exc, fragment = forged_caches(rng)[case]
    dout = rng.standard_normal((5, 4))
    before = snapshot((dout, cache))
    with pytest.raises(exc, match=fragment):
        layers.dropout_backward(dout, cache)
    assert_same(before, (dout, cache))


def test_dropout_backward_real_cache_still_works(rng):
    x = rng.standard_normal((5, 4))
    out, cache = layers.dropout_forward(x, {"p": 0.5, "mode": "train", "seed": 1})
    dout = rng.standard_normal((5, 4))
    dx = layers.dropout_backward(dout, cache)
    np.testing.assert_array_equal(dx, dout * cache[1] / 0.5)
    _, test_cache = layers.dropout_forward(x, {"p": 0.5, "mode": "test"})
    assert layers.dropout_backward(dout, test_cache) is dout


# ---------------------------------------------------------------- gradcheck arguments


@pytest.mark.parametrize("f", [None, 3, "np.sum", [np.sum], np.ones(2)])
def test_gradcheck_refuses_a_non_callable_f(rng, f):
    x = rng.standard_normal((2, 3))
    before = x.copy()
    for call in (lambda: gradcheck.eval_numerical_gradient(f, x, verbose=False),
                 lambda: gradcheck.eval_numerical_gradient_array(f, x, np.ones((2, 3))),
                 lambda: gradcheck.grad_check_sparse(f, x, np.ones_like(x), verbose=False)):
        with pytest.raises(TypeError, match="f must be a callable"):
            call()
    assert x.tobytes() == before.tobytes()


@pytest.mark.parametrize("seed,exc,fragment", [
    (-1, ValueError, "seed must be >= 0"), (2**128, ValueError, "seed must be < "),
    (1.5, TypeError, "seed must be an int"), ("0", TypeError, "seed must be an int"),
    (True, TypeError, "seed must be an int"), ([1, 2], TypeError, "seed must be an int"),
    (np.random.default_rng(0), TypeError, "seed must be an int"),
])
def test_gradcheck_validates_seed(rng, seed, exc, fragment):
    x = rng.standard_normal((2, 3))
    before = x.copy()
    calls = []

    def f(v):
        calls.append(1)
        return float(np.sum(v))

    with pytest.raises(exc, match=fragment):
        gradcheck.grad_check_sparse(f, x, np.ones_like(x), seed=seed, verbose=False)
    assert calls == [] and x.tobytes() == before.tobytes()


def test_gradcheck_valid_seed_still_reproducible(rng):
    x = rng.standard_normal((3, 3))
    a = gradcheck.grad_check_sparse(lambda v: float(np.sum(v ** 2)), x, 2 * x, seed=np.int64(7), verbose=False)
    b = gradcheck.grad_check_sparse(lambda v: float(np.sum(v ** 2)), x, 2 * x, seed=7, verbose=False)
    assert np.array_equal(a, b) and np.all(a < 1e-7)


# ---------------------------------------------------------------- fastopt train: models that cannot fit


@pytest.mark.parametrize("argv,fragment", [
    (["--hidden", "99999999999"], "--hidden 99999999999"),
    (["--batch-size", "1000000000000"], "--batch-size 1000000000000"),
    (["--hidden", "64,99999999999,64", "--data", "spiral"], "--hidden 64,99999999999,64"),
])
def test_train_refuses_what_cannot_fit_in_memory(tmp_path, argv, fragment):
    ckpt = tmp_path / "never.ckpt"
    proc = subprocess.run([sys.executable, "-m", "fastopt", "train", "--quiet", "--checkpoint", str(ckpt)] + argv,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr                       # one line, no traceback
    assert fragment in lines[0] and "GB" in lines[0] and "memory available" in lines[0]
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr
    assert proc.stdout == "" and not ckpt.exists()


def test_memory_estimate_accepts_the_default_run():
    from fastopt import cli, train_cli
    args = cli.build_parser().parse_args(["train"])
    cfg = train_cli.parse_config(args)          # does not raise: the default run fits
    need = train_cli.estimate_memory(cfg)
    assert 0 < need < 100e6
    big = dict(cfg, hidden=[99999999999])
    assert train_cli.estimate_memory(big) > 99999999999 * 64 * 4
