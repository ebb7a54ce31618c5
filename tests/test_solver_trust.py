"""Solver and RuleOptimizer: all or nothing, validation at construction, threads, the zero-copy
grads path, CS231n's global-RNG draws. Every refusal checks the message and that nothing changed."""
import copy
import threading

import numpy as np
import pytest
from _nn_data import blob_data
from test_solver import make_model, solver_kwargs

from fastopt import checkpoint, optim
from fastopt.flat import FlatParams
from fastopt.optim.rule_adapter import RuleOptimizer
from fastopt.solver import Solver

DIM, CLASSES = 6, 3


def kwargs(**kw):
    return solver_kwargs(**{"num_epochs": 2, **kw})


def params3(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {"W1": rng.standard_normal((4, 5)).astype(dtype), "b1": rng.standard_normal(5).astype(dtype),
            "W2": rng.standard_normal((5, 3)).astype(dtype)}


def grads_like(params, seed=1):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()}


def snapshot(opt):
    return copy.deepcopy({"params": opt.params, "configs": opt.configs, "lr": opt.param_groups[0]["lr"]})


def assert_same(a, b):
    """Bitwise equality of nested dicts/lists/tuples of arrays and scalars (nan equals nan)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    else:
        assert type(a) is type(b) and (a == b or (a != a and b != b))  # nan: itself


# ---------------------------------------------------------------- RuleOptimizer
@pytest.mark.parametrize("name", sorted(optim.RULES))
def test_rule_optimizer_is_bitwise_the_rule_applied_per_parameter(name):
    rule = optim.RULES[name]
    params, ref = params3(), params3()
    cfg = {"learning_rate": 1e-2}
    opt = RuleOptimizer(rule, params, cfg)
    ref_cfgs = {k: dict(cfg) for k in ref}
    for step in range(3):
        g = grads_like(params, seed=step)
        opt.step(g)
        for k in ref:
            _, ref_cfgs[k] = rule(ref[k], g[k], ref_cfgs[k])
    for k in ref:
        assert np.array_equal(params[k], ref[k])
        assert_same(opt.configs[k], ref_cfgs[k])
    assert cfg == {"learning_rate": 1e-2}  # the caller's dict is never written


@pytest.mark.parametrize("bad,exc,fragment", [
    (lambda g: g.pop("W2"), ValueError, r"missing \['W2'\]"),
    (lambda g: g.update(W3=np.zeros(2)), ValueError, "unexpected"),
    (lambda g: g.update(W2=np.zeros((3, 5))), ValueError, r"grads\['W2'\] must have the shape"),
    (lambda g: g.update(W2=np.zeros((5, 3), dtype=np.int64)), TypeError, r"grads\['W2'\] must be a float"),
    (lambda g: g.update(W2=[[0.0] * 3] * 5), TypeError, r"grads\['W2'\]"),
], ids=["missing", "extra", "shape", "int-dtype", "list"])
@pytest.mark.parametrize("name", ["sgd_momentum", "adam"])
def test_rule_step_with_a_bad_later_grad_changes_nothing(name, bad, exc, fragment):
    params = params3()
    opt = RuleOptimizer(optim.RULES[name], params, {"learning_rate": 1e-2})
    opt.step(grads_like(params, seed=3))  # state exists: a half step would show in it
    for first_step in (False, True):
        if first_step:
            params = params3()
            opt = RuleOptimizer(optim.RULES[name], params, {"learning_rate": 1e-2})
        before = snapshot(opt)
        g = grads_like(params)
        bad(g)
        with pytest.raises(exc, match=fragment):
            opt.step(g)
        assert_same(snapshot(opt), before)


def test_rule_step_refuses_aliasing_and_read_only_params_changing_nothing():
    params = params3()
    opt = RuleOptimizer(optim.adam, params, {"learning_rate": 1e-2})
    opt.step(grads_like(params))
    before = snapshot(opt)
    g = grads_like(params)
    g["W2"] = opt.configs["W2"]["m"]          # the optimizer's own state as a gradient
    with pytest.raises(ValueError, match=r"grads\['W2'\] shares memory"):
        opt.step(g)
    g["W2"] = params["W2"].T.T                # a view of the parameter
    with pytest.raises(ValueError, match=r"grads\['W2'\] shares memory"):
        opt.step(g)
    assert_same(snapshot(opt), before)
    params["W2"].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['W2'\] must be writeable"):
        opt.step(grads_like(params))
    params["W2"].flags.writeable = True
    assert_same(snapshot(opt), before)


@pytest.mark.parametrize("edit,exc,fragment", [
    (lambda o: o.param_groups[0].__setitem__("lr", -1.0), ValueError, r"param_groups\[0\]\['lr'\]"),
    (lambda o: o.param_groups[0].__setitem__("lr", float("nan")), ValueError, "lr"),
    (lambda o: o.param_groups[0].__setitem__("lr", "0.1"), TypeError, "lr"),
    (lambda o: o.configs["W2"].__setitem__("beta1", 1.5), ValueError, r"configs\['W2'\].*beta1"),
    (lambda o: o.configs["W2"].__setitem__("t", -1), ValueError, r"configs\['W2'\].*'t'"),
], ids=["lr-negative", "lr-nan", "lr-str", "edited-beta1-of-last", "edited-t-of-last"])
def test_bad_hyperparameters_are_refused_before_any_parameter_changes(edit, exc, fragment):
    params = params3()
    opt = RuleOptimizer(optim.adam, params, {"learning_rate": 1e-2})
    opt.step(grads_like(params))
    edit(opt)
    before = snapshot(opt)
    with pytest.raises(exc, match=fragment):
        opt.step(grads_like(params))
    assert_same(snapshot(opt), before)


def test_a_users_rule_that_fails_on_a_later_parameter_changes_nothing():
    fail = {"on": (5, 3)}  # W2's shape: the last parameter

    def my_sgd(w, dw, config=None):  # CS231n style: a new array, the config filled in
        config = {} if config is None else config
        config.setdefault("learning_rate", 1e-2)
        if w.shape == fail["on"]:
            raise ValueError("boom on W2")
        w -= 123.0  # even a rule writing into its w must not reach the model's arrays
        return w - config["learning_rate"] * dw, config

    params = params3()
    opt = RuleOptimizer(my_sgd, params, {"learning_rate": 0.5})
    before = snapshot(opt)
    with pytest.raises(ValueError, match="boom on W2"):
        opt.step(grads_like(params))
    assert_same(snapshot(opt), before)
    fail["on"] = None
    g = grads_like(params)
    opt.step(g)  # every parameter computed, then committed
    for k in params:
        assert np.array_equal(params[k], before["params"][k] - 123.0 - 0.5 * g[k])


def test_grads_of_the_other_float_dtype_or_non_contiguous_are_converted():
    params, ref = params3(np.float64), params3(np.float64)
    opt, ref_opt = RuleOptimizer(optim.adam, params), RuleOptimizer(optim.adam, ref)
    g = grads_like(params)
    g32 = {k: v.astype(np.float32) for k, v in g.items()}
    opt.step(g32)
    ref_opt.step({k: v.astype(np.float32).astype(np.float64) for k, v in g.items()})
    strided = {k: np.asfortranarray(v) if v.ndim == 2 else v for k, v in g.items()}
    opt.step(strided)
    ref_opt.step(g)
    for k in params:
        assert params[k].dtype == np.float64 and np.array_equal(params[k], ref[k])


def test_rule_state_dict_round_trip_continues_bitwise_and_bad_state_changes_nothing():
    params = params3()
    opt = RuleOptimizer(optim.rmsprop, params, {"learning_rate": 1e-2, "decay_rate": 0.9})
    for s in range(2):
        opt.step(grads_like(params, seed=s))
    sd = opt.state_dict()
    assert set(sd["configs"]["W1"]) == {"learning_rate", "decay_rate", "epsilon", "cache"}
    twin_params = {k: v.copy() for k, v in params.items()}
    twin = RuleOptimizer(optim.rmsprop, twin_params, {"learning_rate": 1e-2, "decay_rate": 0.9})
    twin.load_state_dict(sd)
    for s in range(2, 4):
        opt.step(grads_like(params, seed=s))
        twin.step(grads_like(params, seed=s))
    for k in params:
        assert np.array_equal(params[k], twin_params[k])

    bad_states = [
        ("configs", {"W1": {}}, r"one config per parameter"),
        ("configs.W2.cache", np.zeros((2, 2)), r"\['W2'\]\['cache'\] is float64 \(2, 2\)"),
        ("configs.W2.decay_rate", 1.0, "decay_rate"),
        ("configs.W2.evil", "os.system", "does not use"),
        ("param_groups", [{"lr": -1.0}], "lr"),
        ("param_groups", [{"lr": 1e-3, "params": "x"}], "param_groups"),
    ]
    for path, value, fragment in bad_states:
        bad = copy.deepcopy(sd)
        keys = path.split(".")
        target = bad
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
        before = snapshot(twin)
        with pytest.raises((TypeError, ValueError), match=fragment):
            twin.load_state_dict(bad)
        assert_same(snapshot(twin), before)


def test_two_threads_stepping_one_rule_optimizer_raise_instead_of_corrupting():
    entered, release = threading.Event(), threading.Event()

    def slow_sgd(w, dw, config=None):
        config = {} if config is None else config
        if w.size > 1:  # not the construction probe
            entered.set()
            release.wait(10)
        return w - 0.1 * dw, config

    params = params3()
    opt = RuleOptimizer(slow_sgd, params, {})
    errors = []
    t = threading.Thread(target=lambda: opt.step(grads_like(params)))
    t.start()
    assert entered.wait(10)
    try:
        with pytest.raises(RuntimeError, match="another thread"):
            opt.step(grads_like(params))
    finally:
        release.set()
        t.join()
    assert not errors


# ---------------------------------------------------------------- Solver construction
@pytest.mark.parametrize("rule,config,exc,fragment", [
    ("sgd", {"learning_rate": -1}, ValueError, "learning_rate"),
    ("sgd_momentum", {"momentum": 1.5}, ValueError, "momentum"),
    ("adam", {"learning_rte": 1e-3}, ValueError, "learning_rte"),
    ("adam", {"learning_rate": "1e-3"}, TypeError, "learning_rate"),
    ("rmsprop", {"cache": np.zeros(3)}, ValueError, "cache"),
    ("Adam", {"learning_rate": -1}, ValueError, "lr"),
    (optim.SGD, {"nesterov_typo": True}, TypeError, "optim_config does not fit SGD"),
], ids=["lr", "momentum", "typo", "str", "state-array", "class-by-name", "class-kwarg"])
def test_optim_config_is_validated_at_construction(rule, config, exc, fragment):
    model = make_model()
    before = model.state_dict()
    with pytest.raises(exc, match=fragment):
        Solver(model, blob_data(), **kwargs(update_rule=rule, optim_config=config))
    assert_same(model.state_dict(), before)


def bad_data(**changes):
    data = blob_data()
    data.update(changes)
    return data


@pytest.mark.parametrize("data,exc,fragment", [
    (bad_data(y_train=np.full(120, 3)), ValueError, r"data\['y_train'\] must hold labels in \[0, 2\]"),
    (bad_data(y_val=np.full(60, -1)), ValueError, r"data\['y_val'\] must hold labels in \[0, 2\]"),
    (bad_data(y_train=np.zeros(120)), TypeError, r"data\['y_train'\] must be a 1-D ndarray of integer"),
    (bad_data(y_val=np.zeros(60, dtype=bool)), TypeError, r"data\['y_val'\]"),
    (bad_data(X_val=np.zeros((60, DIM + 1))), ValueError, r"data\['X_val'\] has rows of shape \(7,\)"),
    (bad_data(X_train=np.zeros((120, DIM + 1)), X_val=np.zeros((60, DIM + 1))), ValueError,
     r"does not fit the model"),
    (bad_data(y_val=np.zeros(59, dtype=int)), ValueError, r"data\['X_val'\] has 60 rows but"),
    (bad_data(X_train=np.zeros((0, DIM)), y_train=np.zeros(0, dtype=int)), ValueError, "empty"),
    (bad_data(X_train=np.full((120, DIM), "a")), TypeError, r"data\['X_train'\] must be a numeric"),
], ids=["y-train-range", "y-val-negative", "float-labels", "bool-labels", "X_val-features",
        "features-vs-model", "lengths", "empty", "strings"])
def test_data_is_validated_fully_at_construction(data, exc, fragment):
    with pytest.raises(exc, match=fragment):
        Solver(make_model(), data, **kwargs())


@pytest.mark.parametrize("X,y,exc,fragment", [
    (np.zeros((5, DIM)), np.full(5, 3), ValueError, r"y must hold labels in \[0, 2\]"),
    (np.zeros((5, DIM)), np.zeros(5), TypeError, "integer labels"),
    (np.zeros((5, DIM)), np.zeros(4, dtype=int), ValueError, "4 labels for 5 rows"),
    (np.zeros((5, DIM + 2)), np.zeros(5, dtype=int), ValueError, r"X has rows of shape \(8,\)"),
    (np.zeros(5), np.zeros(5, dtype=int), TypeError, "X must be"),
])
def test_check_accuracy_validates_X_and_y(X, y, exc, fragment):
    s = Solver(make_model(), blob_data(), **kwargs())
    state = s.eval_rng.bit_generator.state
    with pytest.raises(exc, match=fragment):
        s.check_accuracy(X, y, num_samples=2)
    assert s.eval_rng.bit_generator.state == state


# ---------------------------------------------------------------- threads
def test_two_threads_training_one_solver_raise_and_the_run_is_the_sequential_one():
    data = blob_data()
    reference = Solver(make_model(), data, **kwargs())
    reference.train()

    entered, release = threading.Event(), threading.Event()

    def hold(solver, event, info):
        if event == "iteration" and info["iteration"] == 3:
            entered.set()
            release.wait(10)

    shared = Solver(make_model(), data, callback=hold, **kwargs())
    errors = []

    def run():
        try:
            shared.train()
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    assert entered.wait(10)
    try:
        for call in (shared.train, lambda: shared.check_accuracy(data["X_val"], data["y_val"]),
                     lambda: shared.save_checkpoint("/nonexistent/never-written.pkl")):
            with pytest.raises(RuntimeError, match="another thread"):
                call()
    finally:
        release.set()
        t.join()
    assert errors == []
    assert shared.loss_history == reference.loss_history
    for k in reference.model.params:
        assert np.array_equal(shared.model.params[k], reference.model.params[k])


def test_train_from_its_own_callback_is_refused():
    def again(solver, event, info):
        if event == "iteration":
            solver.train()

    s = Solver(make_model(), blob_data(), callback=again, **kwargs())
    with pytest.raises(RuntimeError, match="while this Solver is training"):
        s.train()


# ---------------------------------------------------------------- the zero-copy grads path
class FlatGradsModel:
    """A linear softmax model with CS231n's interface plus fastopt's zero-copy one:
    `grads` and loss(X, y, *, out=...) writing the gradients into `out`."""

    def __init__(self, dim, classes, seed=0, flat=False):
        rng = np.random.default_rng(seed)
        self.params = {"W": 0.1 * rng.standard_normal((dim, classes)), "b": np.zeros(classes)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        if flat:  # fastopt.flat: params and grads as views into one buffer each
            storage = FlatParams(self.params)
            self.params, self.grads = storage.params, storage.grads
        self.out_calls = 0

    def loss(self, X, y=None, *, out=None):
        scores = X @ self.params["W"] + self.params["b"]
        if y is None:
            return scores
        shifted = scores - scores.max(axis=1, keepdims=True)
        p = np.exp(shifted)
        p /= p.sum(axis=1, keepdims=True)
        loss = -np.mean(np.log(p[np.arange(len(y)), y]))
        p[np.arange(len(y)), y] -= 1
        p /= len(y)
        if out is None:
            out = {k: np.empty_like(v) for k, v in self.params.items()}
        else:
            self.out_calls += 1
        np.matmul(X.T, p, out=out["W"])
        np.sum(p, axis=0, out=out["b"])
        return loss, out


class PlainModel(FlatGradsModel):
    def loss(self, X, y=None):
        return FlatGradsModel.loss(self, X, y)


@pytest.mark.parametrize("flat", [False, True], ids=["dict", "FlatParams"])
@pytest.mark.parametrize("rule", ["adam", optim.Adam])
def test_models_with_out_grads_use_them_and_train_bitwise_like_the_plain_call(rule, flat):
    data = blob_data()
    a, b = FlatGradsModel(DIM, CLASSES, flat=flat), PlainModel(DIM, CLASSES)
    sa = Solver(a, data, **kwargs(update_rule=rule))
    sb = Solver(b, data, **kwargs(update_rule=rule))
    sa.train()
    sb.train()
    assert a.out_calls == len(sa.loss_history) > 0
    assert sa.loss_history == sb.loss_history
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k])


# ---------------------------------------------------------------- draws without a seed
class RecordingModel(PlainModel):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.batches = []

    def loss(self, X, y=None):
        if y is not None:
            self.batches.append(X.copy())
        return PlainModel.loss(self, X, y)


def test_without_a_seed_minibatches_are_np_random_choice_on_the_global_state():
    data = blob_data()
    model = RecordingModel(DIM, CLASSES)
    np.random.seed(231)
    s = Solver(model, data, **kwargs(seed=None, num_train_samples=None, num_val_samples=None, num_epochs=1))
    assert s.rng is None
    s.train()
    np.random.seed(231)
    expected = [data["X_train"][np.random.choice(120, 20)] for _ in range(len(model.batches))]
    assert len(model.batches) == 6
    for got, want in zip(model.batches, expected):
        assert np.array_equal(got, want)


def test_without_a_seed_np_random_seed_reproduces_the_run_and_resume_is_exact(tmp_path):
    data = blob_data()

    def run(**kw):
        np.random.seed(231)
        s = Solver(PlainModel(DIM, CLASSES), data, **kwargs(seed=None, num_epochs=3, **kw))
        s.train()
        return s

    a, b = run(), run(checkpoint_name=str(tmp_path / "g"))
    assert a.loss_history == b.loss_history and a.val_acc_history == b.val_acc_history
    np.random.seed(7)  # anything: loading restores the global state the run drew from
    resumed = Solver.from_checkpoint(tmp_path / "g_epoch_1.pkl", PlainModel(DIM, CLASSES, seed=3), data)
    resumed.train()
    assert resumed.loss_history == a.loss_history
    for k in a.model.params:
        assert np.array_equal(resumed.model.params[k], a.model.params[k])


def test_different_solvers_in_different_threads_equal_their_sequential_runs():
    data = blob_data()
    configs = [kwargs(seed=1), kwargs(seed=2, update_rule=optim.Adam)]
    sequential = [Solver(make_model(), data, **kw) for kw in configs]
    for s in sequential:
        s.train()
    parallel = [Solver(make_model(), data, **kw) for kw in configs]
    threads = [threading.Thread(target=s.train) for s in parallel]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(sequential, parallel):
        assert a.loss_history == b.loss_history and a.val_acc_history == b.val_acc_history
        for k in a.model.params:
            assert np.array_equal(a.model.params[k], b.model.params[k])


def test_a_users_own_rule_resumes_bitwise_when_passed_again(tmp_path):
    def my_momentum(w, dw, config=None):  # CS231n style: returns a new array
        config = {} if config is None else config
        config.setdefault("learning_rate", 1e-2)
        config.setdefault("momentum", 0.9)
        v = config["momentum"] * config.get("velocity", np.zeros_like(w)) - config["learning_rate"] * dw
        config["velocity"] = v
        return w + v, config

    data = blob_data()
    full = Solver(make_model(), data, checkpoint_name=str(tmp_path / "mine"),
                  **kwargs(update_rule=my_momentum, optim_config={"learning_rate": 0.05}))
    full.train()
    with pytest.raises(ValueError, match="pass update_rule=<it>"):
        Solver.from_checkpoint(tmp_path / "mine_epoch_1.pkl", make_model(), data)
    resumed = Solver.from_checkpoint(tmp_path / "mine_epoch_1.pkl", make_model(rng=2), data,
                                     update_rule=my_momentum)
    resumed.train()
    assert resumed.loss_history == full.loss_history
    for k in full.model.params:
        assert np.array_equal(resumed.model.params[k], full.model.params[k])


def test_a_users_own_class_and_schedule_are_passed_again_never_stored(tmp_path):
    class MySGD(optim.SGD):  # a user's own optimizer class
        pass

    def halve_each_epoch(t, base_lr):  # a user's own schedule callable
        return base_lr * 0.5 ** t

    data = blob_data()
    kw = kwargs(update_rule=MySGD, optim_config={"learning_rate": 0.1, "momentum": 0.9},
                lr_schedule=halve_each_epoch)
    full = Solver(make_model(), data, checkpoint_name=str(tmp_path / "own"), **kw)
    full.train()
    path = tmp_path / "own_epoch_1.pkl"
    saved = checkpoint.load(path)
    assert saved["update_rule"].startswith("custom:") and saved["lr_schedule"] is None
    with pytest.raises(ValueError, match="pass update_rule=<it>"):
        Solver.from_checkpoint(path, make_model(), data)
    with pytest.raises(ValueError, match="pass lr_schedule="):
        Solver.from_checkpoint(path, make_model(), data, update_rule=MySGD)
    resumed = Solver.from_checkpoint(path, make_model(), data, update_rule=MySGD, lr_schedule=halve_each_epoch)
    resumed.train()
    assert resumed.loss_history == full.loss_history
    for k in full.model.params:
        assert np.array_equal(resumed.model.params[k], full.model.params[k])
