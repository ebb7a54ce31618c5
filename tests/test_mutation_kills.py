"""Tests written to kill mutants that survived the mutation run (MUTATION.md lists them).

Each test names the behaviour it pins; together with tests elsewhere they make a mutant of the
checked code fail at least one test.
"""
import numpy as np
import pytest

from fastopt import _openmp
from fastopt import _optim_kernels as K
from fastopt.reference import optim as R


def _variants():
    mods = [K]
    if _openmp.cpu_has_avx2_fma():
        try:
            from fastopt import _optim_kernels_avx2
        except ImportError:
            pass
        else:
            mods.append(_optim_kernels_avx2)
    return mods + [R]


MODULES = _variants()
MOD_IDS = [getattr(m, "SIMD_VARIANT", "twin") for m in MODULES]

# kernel: (buffer names after param, grad; scalars with every option on; scalars with every
# optional buffer unused; which buffers are optional)
KERNELS = {
    "sgd_step": (["momentum_buffer"], [0.1, 0.01, 0.9, 0.1, True, False, False],
                 [0.1, 0.0, 0.0, 0.0, False, False, False], {"momentum_buffer"}),
    "velocity_step": (["velocity"], [0.1, 0.9, True], None, set()),
    "adagrad_step": (["state_sum"], [0.1, 0.01, 1e-10, False], None, set()),
    "rmsprop_step": (["square_avg", "grad_avg", "momentum_buffer"], [0.01, 0.9, 1e-8, 0.0, 0.9, True, False],
                     [0.01, 0.9, 1e-8, 0.0, 0.0, False, False], {"grad_avg", "momentum_buffer"}),
    "adam_step": (["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
                  [1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-2, 0.03, False, True, False],
                  [1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-2, 0.03, False, False, False], {"max_exp_avg_sq"}),
}
CASES = [(name, slot) for name, (bufs, *_rest) in KERNELS.items() for slot in ["grad"] + bufs]


@pytest.mark.parametrize("mod", MODULES, ids=MOD_IDS)
@pytest.mark.parametrize("name, slot", CASES)
@pytest.mark.parametrize("bad_size", [4, 0])
def test_every_used_buffer_of_the_wrong_size_is_refused_by_name(mod, name, slot, bad_size):
    bufs, scalars, _, _ = KERNELS[name]
    arrays = {"param": np.ones(5), "grad": np.ones(5), **{b: np.ones(5) for b in bufs}}
    arrays[slot] = np.ones(bad_size)
    before = {k: v.copy() for k, v in arrays.items()}
    with pytest.raises(ValueError, match=rf"^{slot} must have 5 elements \(the size of param\), got {bad_size}$"):
        getattr(mod, name)(*arrays.values(), *scalars, 1)
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], before[k], err_msg=k)


UNUSED = [(name, slot) for name, (_, _, off, optional) in KERNELS.items() for slot in sorted(optional)]


@pytest.mark.parametrize("mod", MODULES, ids=MOD_IDS)
@pytest.mark.parametrize("name, slot", UNUSED)
def test_an_unused_buffer_may_be_empty_or_full_but_nothing_else(mod, name, slot):
    bufs, _, scalars_off, _ = KERNELS[name]

    def call(size):
        arrays = [np.ones(5), np.ones(5)] + [np.ones(size if b == slot else 5) for b in bufs]
        getattr(mod, name)(*arrays, *scalars_off, 1)
        return arrays
    assert not np.array_equal(call(0)[0], np.ones(5))          # stepped with an empty unused buffer
    np.testing.assert_array_equal(call(0)[0], call(5)[0])      # a full one is accepted and ignored
    with pytest.raises(ValueError, match=rf"^{slot} is unused here and must be empty \(or of size 5\), "
                                         rf"got 3 elements$"):
        call(3)


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
]


@pytest.mark.parametrize("mod", MODULES, ids=MOD_IDS)
@pytest.mark.parametrize("name, state, scalars, want", WD1, ids=[f"{c[0]}-{i}" for i, c in enumerate(WD1)])
def test_weight_decay_of_exactly_one(mod, name, state, scalars, want):
    p = np.ones(1)
    getattr(mod, name)(p, np.ones(1), *[s.copy() for s in state], *scalars, 1)
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
    from _nn_data import blob_data
    from fastopt.nn import FullyConnectedNet
    from fastopt.solver import Solver
    data = blob_data()
    model = FullyConnectedNet([8], input_dim=6, num_classes=3, seed=1)
    with pytest.raises(TypeError, match=r"^data\['X_train'\] must be an ndarray of shape \(N, \.\.\.\), "
                                        r"got list$"):
        Solver(model, {**data, "X_train": data["X_train"].tolist()})
    with pytest.raises(TypeError, match=r"^data\['X_val'\] must be an ndarray of shape \(N, \.\.\.\), "
                                        r"got ndarray\(6,\)$"):
        Solver(model, {**data, "X_val": np.zeros(6)})
    with pytest.raises(TypeError, match=r"^data\['y_train'\] must be a 1-D ndarray of integer labels, "
                                        r"got ndarray float64\(120,\)$"):
        Solver(model, {**data, "y_train": data["y_train"].astype(float)})
    with pytest.raises(TypeError, match=r"^data\['y_val'\] must be a 1-D ndarray of integer labels, got list $"):
        Solver(model, {**data, "y_val": [0, 1]})
    with pytest.raises(ValueError, match=r"^num_train_samples "):
        Solver(model, data, num_train_samples=0)


def test_check_accuracy_messages():
    from _nn_data import blob_data
    from fastopt.nn import FullyConnectedNet
    from fastopt.solver import Solver
    data = blob_data()
    solver = Solver(FullyConnectedNet([8], input_dim=6, num_classes=3, seed=1), data)
    X = data["X_val"]
    with pytest.raises(ValueError, match=r"^y must be an ndarray of shape \(60,\), got list$"):
        solver.check_accuracy(X, list(data["y_val"]))
    with pytest.raises(ValueError, match=r"^y must be an ndarray of shape \(60,\), got \(59,\)$"):
        solver.check_accuracy(X, data["y_val"][:59])


def test_end_event_reports_the_iteration():
    from _nn_data import blob_data
    from fastopt.nn import FullyConnectedNet
    from fastopt.solver import Solver
    events = []
    solver = Solver(FullyConnectedNet([8], input_dim=6, num_classes=3, seed=1), blob_data(), batch_size=40,
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

    solver = Solver(FullyConnectedNet([8], input_dim=6, num_classes=3, seed=1), data, lr_schedule=halve,
                    optim_config={"learning_rate": 0.1}, num_epochs=1, verbose=False)
    path = solver.save_checkpoint(tmp_path / "c.ckpt")
    with pytest.raises(ValueError, match="custom lr_schedule"):
        Solver.from_checkpoint(path, FullyConnectedNet([8], input_dim=6, num_classes=3, seed=1), data)
    again = Solver.from_checkpoint(path, FullyConnectedNet([8], input_dim=6, num_classes=3, seed=1), data,
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
    with pytest.raises(TypeError, match=r"^dout "):
        relu_backward(np.ones((2, 3), np.float32), cache)


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
