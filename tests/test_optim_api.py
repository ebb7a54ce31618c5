"""fastopt.optim on the active backend: known answers from the formulas, both APIs, groups, names."""
import math

import numpy as np
import pytest

import fastopt
from fastopt import optim
from fastopt._backend import kernels

DTYPES = [np.float32, np.float64]
# float32: a compiled kernel may fuse or reorder operations (a few ulps per step); values are O(1).
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-13, atol=1e-15)}


def close(actual, expected, dtype):
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=np.float64), **TOL[dtype])


# ---------------------------------------------------------------- scalar references (pure Python)
# Written per element from the formulas in torch.optim's / CS231n's docs, independent of the twins.

def ref_sgd(ps, gs, lr, momentum=0.0, dampening=0.0, wd=0.0, nesterov=False, maximize=False):
    out, bufs = list(ps), [None] * len(ps)
    for g_seq in gs:
        for j, g in enumerate(g_seq):
            p = out[j]
            g = -g if maximize else g
            g = g + wd * p
            if momentum:
                bufs[j] = g if bufs[j] is None else momentum * bufs[j] + (1 - dampening) * g
                g = g + momentum * bufs[j] if nesterov else bufs[j]
            out[j] = p - lr * g
    return out


def ref_adagrad(ps, gs, lr, lr_decay=0.0, wd=0.0, init=0.0, eps=1e-10, maximize=False):
    out, sums = list(ps), [init] * len(ps)
    for t, g_seq in enumerate(gs, 1):
        clr = lr / (1 + (t - 1) * lr_decay)
        for j, g in enumerate(g_seq):
            g = (-g if maximize else g) + wd * out[j]
            sums[j] += g * g
            out[j] -= clr * g / (math.sqrt(sums[j]) + eps)
    return out


def ref_rmsprop(ps, gs, lr, alpha=0.99, eps=1e-8, wd=0.0, momentum=0.0, centered=False, maximize=False):
    n = len(ps)
    out, sq, ga, buf = list(ps), [0.0] * n, [0.0] * n, [0.0] * n
    for g_seq in gs:
        for j, g in enumerate(g_seq):
            g = (-g if maximize else g) + wd * out[j]
            sq[j] = alpha * sq[j] + (1 - alpha) * g * g
            if centered:
                ga[j] = alpha * ga[j] + (1 - alpha) * g
                avg = math.sqrt(sq[j] - ga[j] ** 2) + eps
            else:
                avg = math.sqrt(sq[j]) + eps
            if momentum > 0:
                buf[j] = momentum * buf[j] + g / avg
                out[j] -= lr * buf[j]
            else:
                out[j] -= lr * g / avg
    return out


def ref_adam(ps, gs, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, amsgrad=False, maximize=False, decoupled=False):
    n = len(ps)
    out, m, v, vmax = list(ps), [0.0] * n, [0.0] * n, [0.0] * n
    for t, g_seq in enumerate(gs, 1):
        for j, g in enumerate(g_seq):
            g = -g if maximize else g
            if decoupled:
                out[j] *= 1 - lr * wd
            else:
                g = g + wd * out[j]
            m[j] = b1 * m[j] + (1 - b1) * g
            v[j] = b2 * v[j] + (1 - b2) * g * g
            vmax[j] = max(vmax[j], v[j])
            vv = vmax[j] if amsgrad else v[j]
            out[j] -= lr * (m[j] / (1 - b1 ** t)) / (math.sqrt(vv / (1 - b2 ** t)) + eps)
    return out


P0 = [0.5, -1.25, 2.0, 0.0, 3.0]
GRADS = [[0.1, -0.4, 1.5, -2.0, 0.0], [0.3, 0.2, -0.5, -1.0, 0.7], [-0.2, 0.6, 0.25, 0.5, -0.3]]
CASES = [
    (optim.SGD, dict(lr=0.1), ref_sgd, dict(lr=0.1)),
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.05),
     ref_sgd, dict(lr=0.1, momentum=0.9, dampening=0.2, wd=0.05)),
    (optim.SGD, dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True),
     ref_sgd, dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True)),
    (optim.Adagrad, dict(lr=0.2), ref_adagrad, dict(lr=0.2)),
    (optim.Adagrad, dict(lr=0.2, lr_decay=0.1, weight_decay=0.1, initial_accumulator_value=0.3, eps=1e-3),
     ref_adagrad, dict(lr=0.2, lr_decay=0.1, wd=0.1, init=0.3, eps=1e-3)),
    (optim.RMSprop, dict(lr=0.01), ref_rmsprop, dict(lr=0.01)),
    (optim.RMSprop, dict(lr=0.01, alpha=0.9, eps=1e-4, weight_decay=0.1, momentum=0.5, centered=True),
     ref_rmsprop, dict(lr=0.01, alpha=0.9, eps=1e-4, wd=0.1, momentum=0.5, centered=True)),
    (optim.RMSprop, dict(lr=0.01, momentum=0.3, maximize=True), ref_rmsprop,
     dict(lr=0.01, momentum=0.3, maximize=True)),
    (optim.Adam, dict(), ref_adam, dict(lr=1e-3)),
    (optim.Adam, dict(lr=0.1, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.1, amsgrad=True, maximize=True),
     ref_adam, dict(lr=0.1, b1=0.8, b2=0.9, eps=1e-3, wd=0.1, amsgrad=True, maximize=True)),
    (optim.AdamW, dict(lr=0.1), ref_adam, dict(lr=0.1, wd=1e-2, decoupled=True)),
    (optim.AdamW, dict(lr=0.1, weight_decay=0.5, amsgrad=True), ref_adam,
     dict(lr=0.1, wd=0.5, amsgrad=True, decoupled=True)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, kwargs, ref, ref_kwargs", CASES,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_class_known_answer(cls, kwargs, ref, ref_kwargs, dtype):
    p = np.array(P0, dtype=dtype)
    grads = [np.array(g, dtype=dtype) for g in GRADS]
    opt = cls([p], **kwargs)
    for g in grads:
        opt.step([g])
    # The reference sees the grads as stored (float32-rounded when dtype is float32).
    expected = ref([float(x) for x in np.array(P0, dtype=dtype)], [[float(x) for x in g] for g in grads],
                   **ref_kwargs)
    close(p, expected, dtype)
    assert p.dtype == dtype


def test_defaults_match_torch_213():
    import inspect
    expected = {
        optim.SGD: dict(lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False),
        optim.Adagrad: dict(lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                            maximize=False),
        optim.RMSprop: dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                            maximize=False),
        optim.Adam: dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False,
                         decoupled_weight_decay=False),
        optim.NAdam: dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
                          decoupled_weight_decay=False, maximize=False),
        optim.RAdam: dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False,
                          maximize=False),
        optim.Adamax: dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, maximize=False),
        optim.Adadelta: dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, maximize=False),
        optim.AdamW: dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                          maximize=False),
    }
    for cls, defaults in expected.items():
        params = inspect.signature(cls).parameters
        assert {k: params[k].default for k in defaults} == defaults, cls.__name__
        opt = cls([np.zeros(2)])
        assert opt.defaults == defaults, cls.__name__
        assert opt.param_groups[0]["lr"] == defaults["lr"]


def test_adam_state_after_steps():
    p = np.array(P0)
    opt = optim.Adam([p], lr=0.1, betas=(0.5, 0.75))
    for g in GRADS[:2]:
        opt.step([np.array(g)])
    g0, g1 = np.array(GRADS[0]), np.array(GRADS[1])
    st = opt.state[0]
    assert st["step"] == 2
    close(st["exp_avg"], 0.5 * (0.5 * g0) + 0.5 * g1, np.float64)
    close(st["exp_avg_sq"], 0.75 * (0.25 * g0 ** 2) + 0.25 * g1 ** 2, np.float64)
    assert st["max_exp_avg_sq"].size == 0  # amsgrad off: never allocated


def test_sgd_momentum_switched_on_later_starts_buffer_at_grad():
    p = np.array(P0)
    opt = optim.SGD([p], lr=0.1)
    opt.step([np.array(GRADS[0])])
    assert opt.state[0]["momentum_buffer"].size == 0
    opt.param_groups[0]["momentum"] = 0.9
    opt.step([np.array(GRADS[1])])
    np.testing.assert_array_equal(opt.state[0]["momentum_buffer"], np.array(GRADS[1]))
    opt.step([np.array(GRADS[2])])
    expected = ref_sgd(P0, GRADS[:1], 0.1)
    expected = ref_sgd(expected, GRADS[1:], 0.1, momentum=0.9)
    close(p, expected, np.float64)


def test_amsgrad_and_centered_switched_on_later_allocate_zeros():
    p = np.array(P0)
    opt = optim.Adam([p], lr=0.1)
    opt.step([np.array(GRADS[0])])
    opt.param_groups[0]["amsgrad"] = True
    opt.step([np.array(GRADS[1])])
    np.testing.assert_array_equal(opt.state[0]["max_exp_avg_sq"], opt.state[0]["exp_avg_sq"])
    q = np.array(P0)
    opt = optim.RMSprop([q], lr=0.01)
    opt.step([np.array(GRADS[0])])
    opt.param_groups[0].update(centered=True, momentum=0.5)
    opt.step([np.array(GRADS[1])])
    assert opt.state[0]["grad_avg"].shape == q.shape and opt.state[0]["momentum_buffer"].shape == q.shape
    np.testing.assert_allclose(opt.state[0]["grad_avg"], 0.01 * np.array(GRADS[1]), rtol=1e-14)


# ---------------------------------------------------------------- shapes, groups, names

def test_multidimensional_params_and_grads_untouched(rng):
    w = rng.standard_normal((3, 4, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    gw, gb = rng.standard_normal(w.shape).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    gw0, gb0, w0 = gw.copy(), gb.copy(), w.copy()
    opt = optim.SGD([w, b], lr=0.5)
    opt.step([gw, gb])
    np.testing.assert_array_equal(gw, gw0)
    np.testing.assert_array_equal(gb, gb0)
    close(w, w0.astype(np.float64) - 0.5 * gw0.astype(np.float64), np.float32)
    assert opt.state[0]["momentum_buffer"].size == 0


def test_param_groups_use_their_own_lr_and_lr_edits_between_steps():
    a, b, c = np.ones(3), np.ones(2), np.ones(4)
    opt = optim.SGD([{"params": [a, b]}, {"params": [c], "lr": 0.5}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    g = [np.ones(3), np.ones(2), np.ones(4)]
    opt.step(g)
    close(a, [0.9] * 3, np.float64)
    close(b, [0.9] * 2, np.float64)
    close(c, [0.5] * 4, np.float64)
    for group in opt.param_groups:  # a schedule
        group["lr"] *= 0.5
    opt.step(g)
    close(a, [0.85] * 3, np.float64)
    close(c, [0.25] * 4, np.float64)


def test_lr_read_at_each_step_for_adam_matches_functional_with_same_schedule():
    p, w = np.array(P0), np.array(P0)
    opt = optim.Adam([p])
    config = {}
    for t, g in enumerate(GRADS):
        lr = 0.1 / (t + 1)
        opt.param_groups[0]["lr"] = lr
        config["learning_rate"] = lr
        opt.step([np.array(g)])
        optim.adam(w, np.array(g), config)
    np.testing.assert_array_equal(p, w)


def test_group_overrides_and_defaults():
    a, b = np.zeros(2), np.zeros(2)
    opt = optim.Adam([{"params": [a], "betas": (0.5, 0.6), "amsgrad": True, "custom": "kept"}, {"params": [b]}],
                     lr=0.01)
    g0, g1 = opt.param_groups
    assert g0["betas"] == (0.5, 0.6) and g0["amsgrad"] is True and g0["lr"] == 0.01 and g0["custom"] == "kept"
    assert g1["betas"] == (0.9, 0.999) and g1["amsgrad"] is False
    assert g0["params"][0] is a and g1["params"][0] is b
    assert opt.state[0]["max_exp_avg_sq"].shape == (2,) and opt.state[1]["max_exp_avg_sq"].size == 0


def test_dict_params_and_dict_grads():
    params = {"W": np.ones((2, 3)), "b": np.zeros(3)}
    opt = optim.SGD(params, lr=0.1)
    assert opt.param_groups[0]["param_names"] == ("W", "b")
    grads = {"b": np.full(3, 2.0), "W": np.ones((2, 3))}  # any key order
    opt.step(grads)
    close(params["W"], np.full((2, 3), 0.9), np.float64)
    close(params["b"], np.full(3, -0.2), np.float64)
    opt.step([np.ones((2, 3)), np.ones(3)])  # a list in parameter order works too
    close(params["b"], np.full(3, -0.3), np.float64)


def test_groups_with_named_params_and_add_param_group():
    w1, w2, w3 = np.ones(2), np.ones(3), np.ones(4)
    opt = optim.SGD([{"params": {"w1": w1}}, {"params": {"w2": w2}, "lr": 1.0}], lr=0.5)
    opt.add_param_group({"params": {"w3": w3}, "lr": 0.25, "momentum": 0.5})
    assert len(opt.param_groups) == 3 and opt.param_groups[2]["momentum"] == 0.5
    assert opt.param_groups[2]["dampening"] == 0.0  # filled from the defaults
    opt.step({"w1": np.ones(2), "w2": np.ones(3), "w3": np.ones(4)})
    close(w1, [0.5] * 2, np.float64)
    close(w2, [0.0] * 3, np.float64)
    close(w3, [0.75] * 4, np.float64)
    np.testing.assert_array_equal(opt.state[2]["momentum_buffer"], np.ones(4))


def test_add_unnamed_group_then_dict_grads_refused():
    opt = optim.SGD({"w": np.ones(2)}, lr=0.5)
    opt.add_param_group({"params": [np.ones(3)]})
    with pytest.raises(TypeError, match="not all given by name"):
        opt.step({"w": np.ones(2)})
    opt.step([np.ones(2), np.ones(3)])


def test_tuple_and_generator_params():
    a, b = np.ones(2), np.ones(2)
    for params in [(a, b), (x for x in (a, b))]:
        opt = optim.SGD(params, lr=0.1)
        opt.step((np.ones(2), np.ones(2)))
    close(a, [0.8, 0.8], np.float64)


def test_results_do_not_depend_on_thread_count(rng):
    grain = kernels("optim").GRAIN
    n = 2 * grain + 37
    p0 = rng.standard_normal(n)
    grads = [rng.standard_normal(n) for _ in range(3)]
    results = []
    for threads in (1, 2):
        fastopt.set_num_threads(threads)
        p = p0.copy()
        opt = optim.Adam([p], lr=0.01, amsgrad=True, weight_decay=0.1)
        for g in grads:
            opt.step([g])
        results.append(p)
    np.testing.assert_array_equal(results[0], results[1])


def test_float32_and_float64_params_in_one_optimizer():
    a, b = np.ones(3, np.float32), np.ones(3, np.float64)
    opt = optim.Adam([a, b], lr=0.1)
    opt.step([np.ones(3, np.float32), np.ones(3, np.float64)])
    expected = [1 - 0.1 / (1 + 1e-8)] * 3  # step 1: m_hat = g, sqrt(v_hat) = |g|
    close(a, expected, np.float32)
    close(b, expected, np.float64)
    assert opt.state[0]["exp_avg"].dtype == np.float32 and opt.state[1]["exp_avg"].dtype == np.float64


# ---------------------------------------------------------------- CS231n functions

@pytest.mark.parametrize("dtype", DTYPES)
def test_functional_known_answers(dtype):
    w0 = np.array(P0, dtype=dtype)
    gs = [np.array(g, dtype=dtype) for g in GRADS]
    P, G = [float(x) for x in w0], [[float(x) for x in g] for g in gs]

    def run(rule, config):
        w = w0.copy()
        for g in gs:
            nw, config = rule(w, g, config)
            assert nw is w
        return w, config

    w, c = run(optim.sgd, None)
    close(w, ref_sgd(P, G, 1e-2), dtype)
    assert c == {"learning_rate": 1e-2}

    # sgd_momentum: v = mu v - lr g; w += v
    w, c = run(optim.sgd_momentum, {"learning_rate": 0.1})
    v, exp = [0.0] * 5, list(P)
    for g in G:
        v = [0.9 * vi - 0.1 * gi for vi, gi in zip(v, g)]
        exp = [e + vi for e, vi in zip(exp, v)]
    close(w, exp, dtype)
    close(c["velocity"], v, dtype)
    assert c["momentum"] == 0.9 and c["velocity"].dtype == dtype

    w, c = run(optim.nesterov_momentum, {"learning_rate": 0.1, "momentum": 0.7})
    v, exp = [0.0] * 5, list(P)
    for g in G:
        vp = v
        v = [0.7 * vi - 0.1 * gi for vi, gi in zip(v, g)]
        exp = [e - 0.7 * a + 1.7 * b for e, a, b in zip(exp, vp, v)]
    close(w, exp, dtype)

    w, c = run(optim.adagrad, None)
    cache, exp = [0.0] * 5, list(P)
    for g in G:
        cache = [ci + gi * gi for ci, gi in zip(cache, g)]
        exp = [e - 1e-2 * gi / (math.sqrt(ci) + 1e-8) for e, gi, ci in zip(exp, g, cache)]
    close(w, exp, dtype)
    close(c["cache"], cache, dtype)

    w, c = run(optim.rmsprop, {"decay_rate": 0.9})
    cache, exp = [0.0] * 5, list(P)
    for g in G:
        cache = [0.9 * ci + 0.1 * gi * gi for ci, gi in zip(cache, g)]
        exp = [e - 1e-2 * gi / (math.sqrt(ci) + 1e-8) for e, gi, ci in zip(exp, g, cache)]
    close(w, exp, dtype)
    assert c["epsilon"] == 1e-8

    w, c = run(optim.adam, {"learning_rate": 0.1})
    m, v, exp = [0.0] * 5, [0.0] * 5, list(P)
    for t, g in enumerate(G, 1):  # CS231n's form: t += 1 first, then the corrected moments
        m = [0.9 * mi + 0.1 * gi for mi, gi in zip(m, g)]
        v = [0.999 * vi + 0.001 * gi * gi for vi, gi in zip(v, g)]
        exp = [e - 0.1 * (mi / (1 - 0.9 ** t)) / (math.sqrt(vi / (1 - 0.999 ** t)) + 1e-8)
               for e, mi, vi in zip(exp, m, v)]
    close(w, exp, dtype)
    assert c["t"] == 3
    close(c["m"], m, dtype)
    close(c["v"], v, dtype)


def test_functional_config_arrays_updated_in_place_and_given_state_used():
    w = np.array(P0)
    velocity = np.full(5, 0.5)
    config = {"velocity": velocity, "learning_rate": 0.1}
    _, config2 = optim.sgd_momentum(w, np.array(GRADS[0]), config)
    assert config2 is config and config["velocity"] is velocity
    close(velocity, 0.9 * 0.5 - 0.1 * np.array(GRADS[0]), np.float64)
    close(w, np.array(P0) + velocity, np.float64)


def test_functional_adam_continues_from_given_t():
    w = np.array(P0)
    _, c = optim.adam(w, np.array(GRADS[0]), {"t": 4})
    assert c["t"] == 5
    # First moment after one update from zeros, corrected with t = 5.
    m_hat = 0.1 * np.array(GRADS[0]) / (1 - 0.9 ** 5)
    v_hat = 0.001 * np.array(GRADS[0]) ** 2 / (1 - 0.999 ** 5)
    close(w, np.array(P0) - 1e-3 * m_hat / (np.sqrt(v_hat) + 1e-8), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_classes_match_functions_where_they_coincide(dtype, rng):
    shape = (7, 3)
    w0 = rng.standard_normal(shape).astype(dtype)
    grads = [rng.standard_normal(shape).astype(dtype) for _ in range(4)]
    pairs = [
        (optim.SGD, dict(lr=1e-2), optim.sgd, {}),
        (optim.Adagrad, dict(lr=1e-2, eps=1e-8), optim.adagrad, {}),
        (optim.RMSprop, dict(lr=1e-2, alpha=0.99, eps=1e-8), optim.rmsprop, {}),
        (optim.Adam, dict(), optim.adam, {}),
        (optim.Adam, dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6), optim.adam,
         dict(learning_rate=0.05, beta1=0.8, beta2=0.99, epsilon=1e-6)),
    ]
    for cls, kwargs, rule, config in pairs:
        p, w = w0.copy(), w0.copy()
        opt = cls([p], **kwargs)
        for g in grads:
            opt.step([g])
            rule(w, g, config)
        np.testing.assert_array_equal(p, w, err_msg=cls.__name__)


def test_rules_registry():
    assert set(optim.RULES) == {"sgd", "sgd_momentum", "nesterov_momentum", "adagrad", "rmsprop", "adam"}
    assert optim.get_rule("adam") is optim.adam
    assert optim.get_rule(optim.sgd) is optim.sgd
    with pytest.raises(ValueError, match="unknown update rule 'adamw'.*'adam'"):
        optim.get_rule("adamw")
    with pytest.raises(TypeError, match="update rule"):
        optim.get_rule(3)


def test_kernels_fetched_at_each_call_with_threads_for(monkeypatch):
    """The kernel module is looked up per step (so set_backend takes effect at once) and each call
    gets n_threads = threads_for(size, the rule's STEP_GRAIN) (the cached step's pass too, chosen in C)."""
    from _kernel_calls import record_cached
    real = kernels("optim")
    calls = []

    class Spy:
        GRAIN, STEP_GRAIN = real.GRAIN, real.STEP_GRAIN
        __name__ = real.__name__       # the cached step takes StepPlan/StepGuard from the module by name

        def __getattr__(self, name):
            def call(*args, **kwargs):
                if name == "run_cached":    # one compiled call: record the pass it ran per group
                    return record_cached(calls, getattr(real, name), args,
                                         lambda kernel, n: (kernel, args[0].entries[0][0].size, n))
                assert not args, "kernels are called with keywords only"
                size = kwargs["param"].size if "param" in kwargs else kwargs["plan"].size
                calls.append((name, size, kwargs["n_threads"]))
                return getattr(real, name)(**kwargs)
            return call

    fetched = []

    def fake_kernels(family):
        fetched.append(family)
        return Spy()

    monkeypatch.setattr(fastopt._backend, "kernels", fake_kernels)
    fastopt.set_num_threads(2)
    big = np.zeros(2 * real.GRAIN + 1)
    opt = optim.SGD([np.zeros(3), big], lr=0.1)
    opt.step([np.ones(3), np.ones_like(big)])
    opt.step([np.ones(3), np.ones_like(big)])
    optim.adam(np.zeros(4), np.ones(4))
    # step 1: the validated path; step 2: the cached step (it declines: new gradient objects), then
    # the validated path; the functional rule: once
    assert fetched == ["optim"] * 4
    expected_threads = fastopt._backend.threads_for(big.size, real.STEP_GRAIN["sgd_step"][1])
    assert calls == [("sgd_step", 3, 1), ("sgd_step", big.size, expected_threads)] * 2 + [("adam_step", 4, 1)]
    grads = [np.ones(3), np.ones_like(big)]
    calls.clear()
    opt.step(grads)
    opt.step(grads)          # the same gradient objects: the cached step, one multi-tensor call
    assert calls == [("sgd_step", 3, 1), ("sgd_step", big.size, expected_threads),
                     ("sgd_multi", 3 + big.size, expected_threads)]
    assert expected_threads == 2
