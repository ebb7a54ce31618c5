"""Tests written to kill mutants that survived the mutation run (MUTATION.md lists them).

Each test names the behaviour it pins; together with tests elsewhere they make a mutant of the
checked code fail at least one test.
"""
import inspect

import numpy as np
import pytest

from fastopt import _backend
from fastopt import _optim_kernels as K
from fastopt.optim._declarations import RULES
from fastopt.reference import optim as R


def _variants():
    return list(_backend.compiled_variants("optim").values()) + [R]   # the baseline (K) first


MODULES = _variants()
MOD_IDS = [getattr(m, "SIMD_VARIANT", "twin") for m in MODULES]

# Every kernel of the declaration table, through the first rule that uses it (Adam for AdamW's).
KERNEL_RULES = {}
for _rule in RULES.values():
    KERNEL_RULES.setdefault(_rule.kernel, _rule)
AVG_ARGS = ("param_avg", "grad_scale", "avg_weight")   # a rule with `averaging` takes these too


def all_on(rule):
    """The rule's hyperparameters with every option on: each flag True, each real that defaults to 0
    (momentum, dampening, weight decay, ...) 0.1; the others at their defaults."""
    h = {hy.name: True if hy.kind == "bool" else 0.1 if hy.kind == "real" and hy.default == 0.0
         else hy.default for hy in rule.hypers}
    return {**h, **rule.fixed}


def kernel_scalars(rule, h):
    """The kernel's scalar keywords for a first step (no momentum buffer reset) under `h`."""
    return rule.per_step(h, {sc.name: sc.initial for sc in rule.scalars}, False)[0]


def kernel_kwargs(rule, h, arrays):
    """Keywords of one kernel call: arrays by kernel argument, the per-step scalars, and (averaging
    rules) gradient factor and average weight 0.5, with arrays["param_avg"] or no average (empty)."""
    kw = {**arrays, **kernel_scalars(rule, h), "n_threads": 1}
    if rule.averaging:
        kw.update(param_avg=kw.pop("param_avg", np.empty(0)), grad_scale=0.5, avg_weight=0.5)
    return kw


def slots(rule):
    return ["grad"] + [s.kernel_arg for s in rule.state] + (["param_avg"] if rule.averaging else [])


# (kernel, slot, wrong size): a size-0 param_avg is not wrong, it means "no running average".
CASES = [(name, slot, bad) for name, rule in KERNEL_RULES.items() for slot in slots(rule)
         for bad in (4, 0) if not (slot == "param_avg" and bad == 0)]


@pytest.mark.parametrize("name", sorted(KERNEL_RULES))
def test_every_option_on_uses_every_state_buffer(name):
    # What makes the size test below check every buffer as a USED one.
    rule = KERNEL_RULES[name]
    assert all(rule.used_state(all_on(rule))), name


@pytest.mark.parametrize("mod", MODULES, ids=MOD_IDS)
@pytest.mark.parametrize("name, slot, bad_size", CASES)
def test_every_used_buffer_of_the_wrong_size_is_refused_by_name(mod, name, slot, bad_size):
    rule = KERNEL_RULES[name]
    arrays = {s: np.ones(5) for s in ["param"] + slots(rule)}
    arrays[slot] = np.ones(bad_size)
    before = {k: v.copy() for k, v in arrays.items()}
    with pytest.raises(ValueError, match=rf"^{slot} must have 5 elements \(the size of param\), got {bad_size}$"):
        getattr(mod, name)(**kernel_kwargs(rule, all_on(rule), arrays))
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], before[k], err_msg=k)


# (kernel, buffer) for every state buffer that the rule's defaults leave unused.
UNUSED = [(name, s.kernel_arg) for name, rule in KERNEL_RULES.items()
          for s, used in zip(rule.state, rule.used_state({**rule.defaults, **rule.fixed})) if not used]


def test_the_unused_buffer_cases_are_those_of_the_table():
    # The derivation above finds the optional buffers the old hand-written list named (and any new one).
    assert {("sgd_step", "momentum_buffer"), ("rmsprop_step", "grad_avg"), ("rmsprop_step", "momentum_buffer"),
            ("adam_step", "max_exp_avg_sq")} <= set(UNUSED)


@pytest.mark.parametrize("mod", MODULES, ids=MOD_IDS)
@pytest.mark.parametrize("name, slot", UNUSED)
def test_an_unused_buffer_may_be_empty_or_full_but_nothing_else(mod, name, slot):
    rule = KERNEL_RULES[name]
    h = {**rule.defaults, **rule.fixed}

    def call(size):
        arrays = {"param": np.ones(5), "grad": np.ones(5),
                  **{s.kernel_arg: np.ones(size if s.kernel_arg == slot else 5) for s in rule.state}}
        getattr(mod, name)(**kernel_kwargs(rule, h, arrays))
        return arrays["param"]
    assert not np.array_equal(call(0), np.ones(5))          # stepped with an empty unused buffer
    np.testing.assert_array_equal(call(0), call(5))         # a full one is accepted and ignored
    with pytest.raises(ValueError, match=rf"^{slot} is unused here and must be empty \(or of size 5\), "
                                         rf"got 3 elements$"):
        call(3)


def call_positional(mod, name, arrays, scalars):
    """mod.<name> with its arrays and scalars in the kernel's order (the twin's signature), without
    the averaging arguments (off: no average, gradient factor 1), passed by keyword."""
    names = [a for a in inspect.signature(getattr(R, name)).parameters if a not in AVG_ARGS + ("n_threads",)]
    assert len(names) == len(arrays) + len(scalars), name
    kw = dict(zip(names, [*arrays, *scalars]), n_threads=1)
    if KERNEL_RULES[name].averaging:
        kw.update(param_avg=np.empty(0), grad_scale=1.0, avg_weight=0.0)
    return getattr(mod, name)(**kw)


# weight_decay = 1 exactly: grad' = grad + param (L2) or param *= 1 - lr (decoupled). Worked by hand
# for param = grad = 1 in float64, no momentum. The second moments start at 1, not 0: a first step
# from zero state divides the gradient by its own size, which would hide how large it was.
SQ5 = 5 ** 0.5
WD1 = [
    ("sgd_step", [np.empty(0)], [0.1, 1.0, 0.0, 0.0, False, False, False], 1 - 0.1 * 2),
    ("adagrad_step", [np.ones(1)], [0.1, 1.0, 1e-10, False], 1 - 0.1 * 2 / (SQ5 + 1e-10)),
    ("rmsprop_step", [np.ones(1), np.empty(0), np.empty(0)], [0.01, 0.99, 1e-8, 1.0, 0.0, False, False],
     1 - 0.01 * 2 / (1.03 ** 0.5 + 1e-8)),
    ("adam_step", [np.zeros(1), np.ones(1), np.empty(0)],
     [1e-3, 0.9, 0.999, 1e-8, 1.0, 1e-3 / 0.1, 0.001 ** 0.5, False, False, False],
     1 - 1e-2 * 0.2 / (1.003 ** 0.5 / 0.001 ** 0.5 + 1e-8)),
    ("adam_step", [np.zeros(1), np.ones(1), np.empty(0)],
     [1e-3, 0.9, 0.999, 1e-8, 1.0, 1e-3 / 0.1, 0.001 ** 0.5, True, False, False],
     (1 - 1e-3) - 1e-2 * 0.1 / (1 / 0.001 ** 0.5 + 1e-8)),
    # NAdam with the caller's coefficients grad_coef = -0.01, exp_avg_coef = -0.02, bias_correction2
    # 0.001: p += grad_coef * g / d + exp_avg_coef * m / d, d = sqrt(v / 0.001) + eps (L2, decoupled).
    ("nadam_step", [np.zeros(1), np.ones(1)], [1e-3, 0.9, 0.999, 1e-8, 1.0, 0.001, -0.01, -0.02, False, False],
     1 - (0.01 * 2 + 0.02 * 0.2) / ((1.003 / 0.001) ** 0.5 + 1e-8)),
    ("nadam_step", [np.zeros(1), np.ones(1)], [1e-3, 0.9, 0.999, 1e-8, 1.0, 0.001, -0.01, -0.02, True, False],
     (1 - 1e-3) - (0.01 * 1 + 0.02 * 0.1) / ((1.0 / 0.001) ** 0.5 + 1e-8)),
    # RAdam rectified, bias_correction1 0.1, sqrt(bias_correction2) sqrt(0.001), rect 0.5:
    # p -= m * (lr / 0.1) * sqrt(0.001) * 0.5 / (sqrt(v) + eps).
    ("radam_step", [np.zeros(1), np.ones(1)],
     [1e-3, 0.9, 0.999, 1e-8, 1.0, 0.1, 0.001 ** 0.5, 0.5, True, False, False],
     1 - 0.2 * 1e-2 * (0.001 ** 0.5 * 0.5) / (1.003 ** 0.5 + 1e-8)),
    ("radam_step", [np.zeros(1), np.ones(1)],
     [1e-3, 0.9, 0.999, 1e-8, 1.0, 0.1, 0.001 ** 0.5, 0.5, True, True, False],
     (1 - 1e-3) - 0.1 * 1e-2 * (0.001 ** 0.5 * 0.5) / (1.0 ** 0.5 + 1e-8)),
    # Adamax: g = 2 also enters the infinity norm, u = max(0.999 * 1, |2| + eps).
    ("adamax_step", [np.zeros(1), np.ones(1)], [0.01, 0.9, 0.999, 1e-8, 1.0, False],
     1 - 0.01 * 0.2 / (2 + 1e-8)),
    # Adadelta, lr 1: square_avg = 0.9 + 0.1 * 4, delta = sqrt((1 + eps) / (1.3 + eps)) * 2.
    ("adadelta_step", [np.ones(1), np.ones(1)], [1.0, 0.9, 1e-6, 1.0, False],
     1 - ((1 + 1e-6) / (1.3 + 1e-6)) ** 0.5 * 2),
    # Lion decays the parameter (decoupled): c = 0.9 * 0 + 0.1 * g > 0, p = (1 - lr) - lr * sign(c).
    ("lion_step", [np.zeros(1)], [1e-4, 0.9, 0.99, 1.0, False], (1 - 1e-4) - 1e-4),
]


def test_weight_decay_of_one_covers_every_kernel_with_weight_decay():
    assert {c[0] for c in WD1} == {name for name, rule in KERNEL_RULES.items()
                                   if "weight_decay" in rule.defaults}


@pytest.mark.parametrize("mod", MODULES, ids=MOD_IDS)
@pytest.mark.parametrize("name, state, scalars, want", WD1, ids=[f"{c[0]}-{i}" for i, c in enumerate(WD1)])
def test_weight_decay_of_exactly_one(mod, name, state, scalars, want):
    p = np.ones(1)
    call_positional(mod, name, [p, np.ones(1), *[s.copy() for s in state]], scalars)
    assert p[0] == pytest.approx(want, rel=1e-12)


# ------------------------------------------------------------------------------------------------
# the softmax loss twin: per-row shift, refusals by message

from fastopt import _mlp_kernels  # noqa: E402
from fastopt.reference import mlp as RM  # noqa: E402


@pytest.mark.parametrize("mod", [_mlp_kernels, RM], ids=["compiled", "twin"])
def test_softmax_loss_shifts_each_row_by_its_own_max(mod):
    # Rows 2000 apart: a shift by the global max would underflow the second row's exponentials.
    scores = np.array([[1000.0, 999.0], [-1000.0, -1001.0]])
    d = np.empty_like(scores)
    loss = mod.softmax_loss_grad(scores, np.array([0, 1]), d, 1)
    l0, l1 = np.log1p(np.exp(-1.0)), 1 + np.log1p(np.exp(-1.0))
    assert loss == pytest.approx((l0 + l1) / 2, rel=1e-12)
    p = 1 / (1 + np.exp(-1.0))
    np.testing.assert_allclose(d, [[(p - 1) / 2, (1 - p) / 2], [p / 2, (1 - p - 1) / 2]], rtol=1e-12)


@pytest.mark.parametrize("mod", [_mlp_kernels, RM], ids=["compiled", "twin"])
def test_softmax_loss_refuses_empty_scores_by_message(mod):
    e = np.empty((0, 3))
    with pytest.raises(ValueError, match="^scores must have at least one row: the mean loss of no samples "
                                         "is undefined$"):
        mod.softmax_loss_grad(e, np.empty(0, np.int64), e, 1)
    e = np.empty((2, 0))
    with pytest.raises(ValueError, match="^scores must have at least one class column$"):
        mod.softmax_loss_grad(e, np.zeros(2, np.int64), e, 1)


@pytest.mark.parametrize("mod", [_mlp_kernels, RM], ids=["compiled", "twin"])
def test_softmax_loss_names_the_first_bad_label(mod):
    scores, d = np.zeros((3, 3)), np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"^y must hold class indices in \[0, 3\), got y\[1\] = 5$"):
        mod.softmax_loss_grad(scores, np.array([0, 5, -1]), d, 1)


# ------------------------------------------------------------------------------------------------
# messages name the argument, what it got, what was expected (the Python layer's convention)

def test_solver_data_messages():
    # The Solver package's wording (fastopt/solver/_options.py): "a numeric ndarray", dtype and shape.
    from _nn_data import blob_data
    from fastopt.nn import FullyConnectedNet
    from fastopt.solver import Solver
    data = blob_data()
    model = FullyConnectedNet([8], input_dim=6, num_classes=3, rng=1)
    with pytest.raises(TypeError, match=r"^data\['X_train'\] must be a numeric ndarray of shape \(N, \.\.\.\), "
                                        r"got list $"):
        Solver(model, {**data, "X_train": data["X_train"].tolist()})
    with pytest.raises(TypeError, match=r"^data\['X_val'\] must be a numeric ndarray of shape \(N, \.\.\.\), "
                                        r"got ndarray float64\(6,\)$"):
        Solver(model, {**data, "X_val": np.zeros(6)})
    with pytest.raises(TypeError, match=r"^data\['y_train'\] must be a 1-D ndarray of integer labels, "
                                        r"got ndarray float64\(120,\)$"):
        Solver(model, {**data, "y_train": data["y_train"].astype(float)})
    with pytest.raises(TypeError, match=r"^data\['y_val'\] must be a 1-D ndarray of integer labels, got list $"):
        Solver(model, {**data, "y_val": [0, 1]})
    with pytest.raises(ValueError, match=r"^num_train_samples must be >= 1, got 0$"):
        Solver(model, data, num_train_samples=0)


def test_check_accuracy_messages():
    from _nn_data import blob_data
    from fastopt.nn import FullyConnectedNet
    from fastopt.solver import Solver
    data = blob_data()
    solver = Solver(FullyConnectedNet([8], input_dim=6, num_classes=3, rng=1), data)
    X = data["X_val"]
    # The Solver package checks y once (_options.check_y): a list is a TypeError (a wrong type),
    # a wrong length a ValueError that gives both counts.
    with pytest.raises(TypeError, match=r"^y must be a 1-D ndarray of integer labels, got list $"):
        solver.check_accuracy(X, list(data["y_val"]))
    with pytest.raises(ValueError, match=r"^y has 59 labels for 60 rows$"):
        solver.check_accuracy(X, data["y_val"][:59])


def test_end_event_reports_the_iteration():
    from _nn_data import blob_data
    from fastopt.nn import FullyConnectedNet
    from fastopt.solver import Solver
    events = []
    solver = Solver(FullyConnectedNet([8], input_dim=6, num_classes=3, rng=1), blob_data(), batch_size=40,
                    num_epochs=1, verbose=False, callback=lambda s, e, i: events.append((e, dict(i))))
    solver.train()
    name, info = events[-1]
    assert name == "end"
    assert info == {"iteration": 3, "num_iterations": 3, "epoch": 1, "best_val_acc": solver.best_val_acc}


def test_checkpoint_with_a_custom_schedule_needs_it_again(tmp_path):
    from _nn_data import blob_data
    from fastopt.nn import FullyConnectedNet
    from fastopt.solver import Solver
    data = blob_data()

    def halve(t, lr):
        return lr / 2

    solver = Solver(FullyConnectedNet([8], input_dim=6, num_classes=3, rng=1), data, lr_schedule=halve,
                    optim_config={"learning_rate": 0.1}, num_epochs=1, verbose=False)
    path = solver.save_checkpoint(tmp_path / "c.ckpt")
    with pytest.raises(ValueError, match="custom lr_schedule"):
        Solver.from_checkpoint(path, FullyConnectedNet([8], input_dim=6, num_classes=3, rng=1), data)
    again = Solver.from_checkpoint(path, FullyConnectedNet([8], input_dim=6, num_classes=3, rng=1), data,
                                   lr_schedule=halve)
    assert again.lr_schedule is halve


def test_a_damaged_checkpoint_is_named_in_the_error(tmp_path):
    from fastopt import checkpoint
    path = tmp_path / "bad.ckpt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(checkpoint.CheckpointError, match=f"checkpoint file {str(path)!r}"):
        checkpoint.load(path)


def test_layer_messages_name_gamma_and_dout():
    from fastopt.layers import batchnorm_forward, layernorm_forward, relu_backward, relu_forward
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"^gamma "):
        layernorm_forward(x, np.ones(2), np.zeros(3), {})
    rm = np.zeros(3)
    with pytest.raises(ValueError, match="gamma"):           # gamma is the running mean array
        batchnorm_forward(x, rm, np.zeros(3), {"mode": "train", "running_mean": rm})
    _, cache = relu_forward(x)
    # A float32 dout is converted now (issue 9: operands of another real dtype are); complex is refused.
    with pytest.raises(TypeError, match=r"^dout "):
        relu_backward(np.ones((2, 3), np.complex128), cache)


def test_losses_accept_non_contiguous_scores():
    from fastopt.layers import softmax_loss, svm_loss
    x = np.arange(12.0).reshape(3, 4).T          # (4, 3), not C-contiguous
    y = np.array([0, 1, 2, 0])
    for loss in (softmax_loss, svm_loss):
        a, da = loss(x, y)
        b, db = loss(np.ascontiguousarray(x), y)
        assert a == b and np.array_equal(da, db)


def test_functional_rule_names_dw_when_it_is_w():
    from fastopt import optim
    w = np.ones(4)
    with pytest.raises(ValueError, match="dw"):
        optim.sgd(w, w, None)
