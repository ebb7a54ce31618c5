"""Full-batch L-BFGS on the digits: fastopt.optim.lbfgs.LBFGS vs scipy.optimize.minimize(method='L-BFGS-B')
(and torch.optim.LBFGS when installed) on the same loss, from the same start.

    python benchmarks/lbfgs_vs_scipy.py                 # softmax regression and a 64-32-10 MLP, float64
    python benchmarks/lbfgs_vs_scipy.py --iterations 50 # a fixed budget instead of "to tolerance"

The loss is fastopt.nn.FullyConnectedNet's (softmax cross-entropy + L2, float64) on the 1257 training
digits; every optimizer calls the same model.loss, reading and writing the model's flat parameter
buffer. All use a history of 10 pairs (scipy's default maxcor) and stop when max|grad| <= --gtol or
after --iterations iterations; scipy's ftol and fastopt's tolerance_change are set to ~0 so the
gradient test decides. fastopt and torch use the strong-Wolfe line search; scipy its own (Moré-
Thuente via L-BFGS-B). Printed per optimizer: iterations, loss evaluations, final loss, max|grad|,
test accuracy, seconds (one run each, on a shared machine: a rough figure). Needs scipy.

Seconds are dominated by the loss evaluations, i.e. by NumPy's BLAS. scipy and torch bring their own
BLAS thread pools, which fight NumPy's for the cores (DESIGN.md: two spinning pools doubled an MLP
step): compare timings with OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1. Iterations, evaluations and
losses do not depend on it.
"""
import argparse
import time

import numpy as np

import fastopt
from fastopt.data import load_digits
from fastopt.optim.lbfgs import LBFGS


def make_model(hidden, seed=0):
    return fastopt.FullyConnectedNet(hidden, input_dim=64, num_classes=10, reg=1e-3, weight_init="he",
                                     dtype=np.float64, seed=seed)


def flat_grad(model, grads):
    """The gradient dict as one vector, in the order of the model's flat parameter buffer."""
    return np.concatenate([grads[k].reshape(-1) for k in model.params])


def accuracy(model, data):
    return float(np.mean(np.argmax(model.loss(data["X_test"]), axis=1) == data["y_test"]))


def run_fastopt(hidden, data, iterations, gtol):
    model = make_model(hidden)
    X, y = data["X_train"], data["y_train"]
    opt = LBFGS(model.params, max_iter=iterations, max_eval=10 * iterations, history_size=10,
                tolerance_grad=gtol, tolerance_change=1e-300, line_search_fn="strong_wolfe")
    t = time.perf_counter()
    opt.step(lambda: model.loss(X, y))
    seconds = time.perf_counter() - t
    loss, grads = model.loss(X, y)
    return dict(iterations=opt.state["n_iter"], evaluations=opt.state["func_evals"], loss=loss,
                gmax=float(np.abs(flat_grad(model, grads)).max()), acc=accuracy(model, data), seconds=seconds)


def run_scipy(hidden, data, iterations, gtol):
    from scipy.optimize import minimize
    model = make_model(hidden)
    X, y = data["X_train"], data["y_train"]
    buf = model.params.buffer(np.float64)

    def fun(x):
        buf[...] = x
        loss, grads = model.loss(X, y)
        return loss, flat_grad(model, grads)
    t = time.perf_counter()
    res = minimize(fun, buf.copy(), jac=True, method="L-BFGS-B",
                   options=dict(maxiter=iterations, maxfun=10 * iterations, maxcor=10, gtol=gtol, ftol=1e-300))
    seconds = time.perf_counter() - t
    buf[...] = res.x
    loss, grads = model.loss(X, y)
    return dict(iterations=res.nit, evaluations=res.nfev, loss=loss,
                gmax=float(np.abs(flat_grad(model, grads)).max()), acc=accuracy(model, data), seconds=seconds)


def run_torch(hidden, data, iterations, gtol):
    import torch
    model = make_model(hidden)
    X, y = data["X_train"], data["y_train"]
    buf = model.params.buffer(np.float64)
    w = torch.tensor(buf.copy(), requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=iterations, max_eval=10 * iterations, history_size=10,
                            tolerance_grad=gtol, tolerance_change=1e-300, line_search_fn="strong_wolfe")

    def closure():
        buf[...] = w.detach().numpy()
        loss, grads = model.loss(X, y)
        w.grad = torch.tensor(flat_grad(model, grads))
        return torch.tensor(loss, dtype=torch.float64)
    t = time.perf_counter()
    opt.step(closure)
    seconds = time.perf_counter() - t
    buf[...] = w.detach().numpy()
    loss, grads = model.loss(X, y)
    st = opt.state[w]
    return dict(iterations=st["n_iter"], evaluations=st["func_evals"], loss=loss,
                gmax=float(np.abs(flat_grad(model, grads)).max()), acc=accuracy(model, data), seconds=seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--gtol", type=float, default=1e-5)
    args = parser.parse_args()
    try:
        import scipy  # noqa: F401
    except ImportError:
        raise SystemExit("this benchmark needs scipy (pip install scipy); fastopt itself does not")
    runners = [("fastopt", run_fastopt), ("scipy L-BFGS-B", run_scipy)]
    try:
        import torch  # noqa: F401
        runners.append(("torch", run_torch))
    except ImportError:
        pass
    data = load_digits(standardize=True, dtype=np.float64)
    print(f"digits, {len(data['X_train'])} training rows, float64, history 10, gtol {args.gtol:g}, "
          f"at most {args.iterations} iterations; backend {fastopt.backend()}")
    print(f"{'model':<10} {'optimizer':<16} {'iters':>6} {'evals':>6} {'final loss':>14} {'max|g|':>9} "
          f"{'test acc':>8} {'seconds':>8}")
    for name, hidden in (("softmax", []), ("64-32-10", [32])):
        for label, run in runners:
            r = run(hidden, data, args.iterations, args.gtol)
            print(f"{name:<10} {label:<16} {r['iterations']:>6} {r['evaluations']:>6} {r['loss']:>14.10f} "
                  f"{r['gmax']:>9.2e} {r['acc']:>8.4f} {r['seconds']:>8.2f}")


if __name__ == "__main__":
    main()
