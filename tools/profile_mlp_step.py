"""Profile one training step of the 3072-1024-1024-10 batchnorm+ReLU MLP: PyTorch vs NumPy.

Three steps on the same network, data and initial weights (fastopt.bench.mlp_torch.make_problem):
  torch  torch.nn + torch.optim.Adam(fused=True)                (fastopt.bench.mlp_torch)
  fused  flat parameters (fastopt.flat), np.matmul(out=) into preallocated workspaces with
         transposed views, fastopt._mlp_kernels for everything between the matmuls, and ONE Adam
         call over the flat buffer (fastopt._optim_kernels.adam_step when built, else in-place NumPy)
  numpy  the fused step's code on fastopt's pure-NumPy backend: the twins in fastopt.reference.mlp
         and the in-place NumPy Adam (what the fused step costs without the compiled core)
  naive  CS231n-style layer functions with temporaries and a per-parameter CS231n Adam

  model     the shipped path: FullyConnectedNet.loss (fast path) + fastopt.optim.Adam
  fused-k1  (2+ threads) the fused step with OpenBLAS on n threads but the OpenMP kernels on one
  model-k2  (2+ threads) `model` with the kernels on n threads too (fastopt.beside_blas() policy off)

Thread pools: NumPy's OpenBLAS has its own pthread pool, the fastopt kernels use libgomp. Measured
at 2 threads on the 2-core box: with OpenMP kernels on 2 threads between the BLAS calls the fused
step took 83 ms against 44 ms for fused-k1 (torch 43 ms); idle workers of one pool spin while the
other pool wants the cores. With OMP_WAIT_POLICY=PASSIVE (libgomp workers sleep at once) fused and
fused-k1 were equal (43 ms; torch 52 ms in that run: the variable reaches torch's libgomp too).

Timing: the methods run interleaved in one process (one call each per round), min over rounds.
Threads: torch.set_num_threads(n), fastopt.set_num_threads(n) and NumPy's BLAS (OpenBLAS) limited
with threadpoolctl.threadpool_limits(n) when threadpoolctl is installed (else say so and rely on
OPENBLAS_NUM_THREADS set by the caller).

    python tools/profile_mlp_step.py [--threads 1 2] [--rounds 7] [--batch 256]
        [--adam-so PATH]   load adam_step from a built _optim_kernels .so (measurement only)
    python tools/profile_mlp_step.py --grain   kernel times on (N, 1024) at 1 vs 2 threads
    python tools/profile_mlp_step.py --digits  the digits Solver step (fastopt.bench.small), part by
        part: batch draw and gather, validation (_Call), the GEMMs, each fused kernel, the optimizer
"""
import argparse
import contextlib
import importlib.util
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastopt  # noqa: E402
from fastopt import _backend  # noqa: E402
from fastopt.bench.mlp_torch import build_torch_step, make_problem  # noqa: E402
from fastopt.flat import FlatParams  # noqa: E402

DIMS = (3072, 1024, 1024, 10)
LR, BETA1, BETA2, ADAM_EPS, BN_EPS, BN_MOMENTUM = 1e-3, 0.9, 0.999, 1e-8, 1e-5, 0.9


# ------------------------------------------------------------------------------------------------
# Adam over one flat buffer
# ------------------------------------------------------------------------------------------------

def load_adam(so_path=None):
    """adam_step from fastopt._optim_kernels (or a given .so), or None."""
    if so_path:
        spec = importlib.util.spec_from_file_location("fastopt._optim_kernels", so_path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.adam_step
    try:
        from fastopt._optim_kernels import adam_step
    except ImportError:
        return None
    return adam_step


class FlatAdam:
    """Adam (torch semantics, no weight decay) over every flat buffer: one kernel call per dtype."""

    def __init__(self, flat, adam_step=None, lr=LR):
        self.p = flat.params.buffers
        self.g = flat.grads.buffers
        self.m = flat.zeros_like_flat().buffers
        self.v = flat.zeros_like_flat().buffers
        self.kernel = adam_step
        # scratch for the NumPy fallback only; the kernel takes an empty max_exp_avg_sq (no amsgrad)
        self.tmp = flat.zeros_like_flat().buffers if adam_step is None else {}
        self.empty = {dt: np.empty(0, dt) for dt in self.p}
        self.lr, self.t = lr, 0

    def step(self, n_threads=1):
        self.t += 1
        bc1 = 1 - BETA1 ** self.t
        bc2_sqrt = (1 - BETA2 ** self.t) ** 0.5
        step_size = self.lr / bc1
        for dt, p in self.p.items():
            g, m, v = self.g[dt], self.m[dt], self.v[dt]
            if self.kernel is not None:
                self.kernel(param=p, grad=g, exp_avg=m, exp_avg_sq=v, max_exp_avg_sq=self.empty[dt],
                            param_avg=self.empty[dt], lr=self.lr, beta1=BETA1, beta2=BETA2, eps=ADAM_EPS,
                            weight_decay=0.0, step_size=step_size, bias_correction2_sqrt=bc2_sqrt,
                            decoupled=False, amsgrad=False, maximize=False, grad_scale=1.0, avg_weight=0.0,
                            n_threads=n_threads)
                continue
            tmp = self.tmp[dt]                        # in-place ufuncs: no allocation per step
            m *= BETA1
            np.multiply(g, 1 - BETA1, out=tmp)
            m += tmp
            v *= BETA2
            np.multiply(g, g, out=tmp)
            tmp *= 1 - BETA2
            v += tmp
            np.sqrt(v, out=tmp)
            tmp *= 1 / bc2_sqrt
            tmp += ADAM_EPS
            np.divide(m, tmp, out=tmp)
            tmp *= step_size
            p -= tmp


# ------------------------------------------------------------------------------------------------
# fused NumPy + Cython step
# ------------------------------------------------------------------------------------------------

class Timer:
    """Accumulates seconds per label when enabled; a no-op context otherwise."""

    def __init__(self):
        self.enabled = False
        self.totals = {}

    @contextlib.contextmanager
    def __call__(self, label):
        if not self.enabled:
            yield
            return
        t0 = time.perf_counter()
        yield
        self.totals[label] = self.totals.get(label, 0.0) + time.perf_counter() - t0


class FusedMLP:
    """The batchnorm MLP on flat parameters, preallocated workspaces and fused kernels."""

    def __init__(self, X, y, params, adam_step=None, kernels=None, max_threads=None):
        self.K = kernels if kernels is not None else _backend.kernels("mlp")
        self.max_threads = max_threads       # cap for the OpenMP kernels (BLAS threads unaffected)
        self.X, self.y = X, y
        self.flat = FlatParams(params)
        self.p, self.g = self.flat.params, self.flat.grads
        self.L = sum(1 for k in params if k.startswith("W"))
        n, dt = X.shape[0], X.dtype
        self.ws = {}
        for i in range(1, self.L + 1):
            d = params[f"W{i}"].shape[1]
            self.ws[f"z{i}"] = np.empty((n, d), dt)      # x @ W (kept for the batchnorm backward)
            self.ws[f"h{i}"] = np.empty((n, d), dt)      # relu(bn(z + b)); layer L: unused
            self.ws[f"dh{i}"] = np.empty((n, d), dt)     # upstream grad, turned into dz in place
            if i < self.L:
                for k in ("mean", "inv_std"):
                    self.ws[f"{k}{i}"] = np.empty(d, dt)
                self.ws[f"rm{i}"] = np.zeros(d, dt)
                self.ws[f"rv{i}"] = np.ones(d, dt)
        self.adam = FlatAdam(self.flat, adam_step)
        self.timer = Timer()

    def step(self):
        K, p, g, ws, L, t = self.K, self.p, self.g, self.ws, self.L, self.timer
        n, nt = self.X.shape[0], None
        x = self.X
        for i in range(1, L + 1):                            # forward
            z = ws[f"z{i}"]
            with t("matmul"):
                np.matmul(x, p[f"W{i}"], out=z)
            nt = self._threads(z.size)
            with t("kernels"):
                if i < L:
                    K.batchnorm_relu_forward(z, p[f"b{i}"], p[f"gamma{i}"], p[f"beta{i}"], BN_EPS,
                                             BN_MOMENTUM, ws[f"rm{i}"], ws[f"rv{i}"], ws[f"h{i}"],
                                             ws[f"mean{i}"], ws[f"inv_std{i}"], nt)
                    x = ws[f"h{i}"]
                else:
                    np.add(z, p[f"b{i}"], out=z)
                    dz = ws[f"dh{i}"]
                    loss = K.softmax_loss_grad(z, self.y, dz, nt)
                    K.bias_grad(dz, g[f"b{i}"], nt)
        for i in range(L, 0, -1):                            # backward; dz = grad wrt z_i
            x_in = self.X if i == 1 else ws[f"h{i - 1}"]
            with t("matmul"):
                np.matmul(x_in.T, dz, out=g[f"W{i}"])
                if i > 1:                                   # the input needs no gradient
                    dh = ws[f"dh{i - 1}"]
                    np.matmul(dz, p[f"W{i}"].T, out=dh)
            if i > 1:
                j = i - 1
                nt = self._threads(dh.size)
                with t("kernels"):
                    K.relu_batchnorm_backward(dh, ws[f"h{j}"], ws[f"z{j}"], p[f"b{j}"], p[f"gamma{j}"],
                                              ws[f"mean{j}"], ws[f"inv_std{j}"], dh, g[f"gamma{j}"],
                                              g[f"beta{j}"], g[f"b{j}"], nt)
                dz = dh
        with t("adam"):
            self.adam.step(self._threads(None))
        return loss

    def _threads(self, work):
        n = _backend.get_num_threads() if work is None else _backend.threads_for(work, self.K.GRAIN)
        return n if self.max_threads is None else min(n, self.max_threads)


# ------------------------------------------------------------------------------------------------
# naive CS231n-style step (temporaries everywhere)
# ------------------------------------------------------------------------------------------------

from fastopt.bench.cs231n_numpy import batchnorm_backward as _bn_backward  # noqa: E402
from fastopt.bench.cs231n_numpy import batchnorm_forward as _bn_forward  # noqa: E402


class NaiveMLP:
    def __init__(self, X, y, params):
        self.X, self.y = X, y
        self.params = {k: v.copy() for k, v in params.items()}
        self.L = sum(1 for k in params if k.startswith("W"))
        self.bn = [{"running_mean": 0.0, "running_var": 1.0} for _ in range(self.L)]
        self.configs = {k: {"m": np.zeros_like(v), "v": np.zeros_like(v), "t": 0} for k, v in params.items()}

    def step(self):
        p, L = self.params, self.L
        caches, x = [], self.X
        for i in range(1, L + 1):
            z = x.reshape(x.shape[0], -1).dot(p[f"W{i}"]) + p[f"b{i}"]
            if i < L:
                a, bn_cache = _bn_forward(z, p[f"gamma{i}"], p[f"beta{i}"], self.bn[i - 1])
                h = np.maximum(0, a)
                caches.append((x, a, bn_cache))
                x = h
            else:
                caches.append((x, None, None))
                scores = z
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        n = scores.shape[0]
        loss = -log_probs[np.arange(n), self.y].mean()
        dz = np.exp(log_probs)
        dz[np.arange(n), self.y] -= 1
        dz /= n
        grads = {}
        for i in range(L, 0, -1):
            x_in, a, bn_cache = caches[i - 1]
            if i < L:
                da = dh * (a > 0)
                dz, grads[f"gamma{i}"], grads[f"beta{i}"] = _bn_backward(da, bn_cache)
            grads[f"W{i}"] = x_in.reshape(x_in.shape[0], -1).T.dot(dz)
            grads[f"b{i}"] = dz.sum(axis=0)
            if i > 1:
                dh = dz.dot(p[f"W{i}"].T)
        for k, w in p.items():                              # CS231n adam(w, dw, config)
            c, dw = self.configs[k], grads[k]
            c["t"] += 1
            c["m"] = BETA1 * c["m"] + (1 - BETA1) * dw
            c["v"] = BETA2 * c["v"] + (1 - BETA2) * (dw ** 2)
            mt = c["m"] / (1 - BETA1 ** c["t"])
            vt = c["v"] / (1 - BETA2 ** c["t"])
            p[k] = w - LR * mt / (np.sqrt(vt) + ADAM_EPS)
        return loss


# ------------------------------------------------------------------------------------------------
# measurement
# ------------------------------------------------------------------------------------------------

def blas_limit(n):
    """NumPy's OpenBLAS on n threads (fastopt._blas talks to the library through ctypes)."""
    from fastopt._blas import limit_blas_threads
    return limit_blas_threads(n)


def model_step(problem, kernel_threads_2=False):
    """The shipped path: FullyConnectedNet.loss (fast path) + fastopt.optim.Adam, as `fastopt bench`.

    kernel_threads_2: switch off fastopt.beside_blas()'s policy (kernels on threads_for()'s count even
    while OpenBLAS runs 2 threads) -- the contended configuration, to measure what the policy buys.
    """
    from fastopt import _blas
    from fastopt.bench.mlp import build_fastopt_step
    step = build_fastopt_step(problem, DIMS)
    if not kernel_threads_2:
        return step

    def contended():
        real = _blas.blas_num_threads
        _blas.blas_num_threads = lambda: 1   # the policy then believes BLAS is single-threaded
        try:
            step()
        finally:
            _blas.blas_num_threads = real
    contended.model, contended.optimizer = step.model, step.optimizer
    return contended


def best_of(fns, rounds, block=1):
    """Each round calls every fn `block` times in a row; min seconds per call per fn.

    Blocks, not call-by-call interleaving, at 2 threads: a library's worker threads keep spinning
    for a while after its last call (OpenBLAS, OpenMP) and would steal the cores from the next
    library's first call; only the first call of a block pays for that.
    """
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                best[k] = min(best[k], time.perf_counter() - t0)
    return best


def raw_matmul(threads, rounds, block):
    import torch
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 3072), dtype=np.float32)
    b = rng.standard_normal((3072, 1024), dtype=np.float32)
    o = np.empty((256, 1024), np.float32)
    ta, tb, to = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(o.copy())
    fns = {"numpy (256x3072)@(3072x1024)": lambda: np.matmul(a, b, out=o),
           "torch (256x3072)@(3072x1024)": lambda: torch.mm(ta, tb, out=to),
           "numpy X.T@dZ (3072x256)@(256x1024)": lambda: np.matmul(a.T, o, out=b),
           "torch X.T@dZ (3072x256)@(256x1024)": lambda: torch.mm(ta.T, to, out=tb)}
    return best_of(fns, rounds, block)


def grain_scan(rounds, dtype=np.float32, d=1024):
    """Time the kernels on (N, d) at 1 and 2 threads: where does a 2nd thread start to pay?"""
    K = _backend.kernels("mlp")
    rng = np.random.default_rng(0)
    print(f"grain scan ({np.dtype(dtype).name}, d={d}): us at 1 thread / 2 threads")
    for n in (8, 16, 32, 64, 128, 256, 1024):
        z = rng.standard_normal((n, d)).astype(dtype)
        g = rng.standard_normal((n, d)).astype(dtype)
        v = {k: rng.random(d).astype(dtype) + 0.5 for k in ("b", "gamma", "beta", "rm", "rv", "mean", "istd")}
        out, dz, db = np.empty_like(z), np.empty_like(z), np.empty(d, dtype)
        dg, dbe = np.empty(d, dtype), np.empty(d, dtype)
        K.batchnorm_relu_forward(z, v["b"], v["gamma"], v["beta"], BN_EPS, BN_MOMENTUM, v["rm"], v["rv"],
                                 out, v["mean"], v["istd"], 1)
        row = []
        for name, fn in (
                ("bias_relu_forward", lambda t: K.bias_relu_forward(z, v["b"], out, t)),
                ("relu_bias_backward", lambda t: K.relu_bias_backward(dz, out, db, t)),
                ("batchnorm_relu_forward", lambda t: K.batchnorm_relu_forward(
                    z, v["b"], v["gamma"], v["beta"], BN_EPS, BN_MOMENTUM, v["rm"], v["rv"], out,
                    v["mean"], v["istd"], t)),
                ("relu_batchnorm_backward", lambda t: K.relu_batchnorm_backward(
                    g, out, z, v["b"], v["gamma"], v["mean"], v["istd"], dz, dg, dbe, db, t))):
            best = best_of({1: lambda: fn(1), 2: lambda: fn(2)}, rounds, 5)
            row.append(f"{name} {best[1] * 1e6:.0f}/{best[2] * 1e6:.0f}")
        print(f"  N={n:5d} ({n * d:8d} elements): " + ", ".join(row))


def digits_breakdown(rounds, clock=time.perf_counter, calls=2000):
    """Median us per call of each part of the digits Solver step, 1 thread (one process, in turn)."""
    import statistics

    from fastopt.bench.small import DIGITS_BATCH, _digits_data, solver_step
    from fastopt.nn.fully_connected import _Call

    fastopt.set_num_threads(1)
    step = solver_step(_digits_data(np.float32), np.float32)
    solver, model = step.solver, step.model
    step()
    X_all, y_all = solver.X_train, solver.y_train
    idx = solver._draws.batch(X_all.shape[0], DIGITS_BATCH)
    X, y = X_all[idx], y_all[idx]
    model.loss(X, y, out=model.grads)
    ws = model._workspaces.get(DIGITS_BATCH)
    plan = ws.plans[True]
    call = _Call(model, X, y, model.grads)
    gemms = __import__("fastopt.bench.mlp", fromlist=["gemms_of_step"]).gemms_of_step(
        step, (X, y, None))
    layers = plan.hidden
    parts = {
        "Solver step (all)": step,
        "batch draw": lambda: solver._draws.batch(X_all.shape[0], DIGITS_BATCH),
        "batch gather": lambda: (X_all[idx], y_all[idx]),
        "model.loss(out=grads)": lambda: model.loss(X, y, out=model.grads),
        "  validation (_Call)": lambda: _Call(model, X, y, model.grads),
        "  plan.run (fwd+bwd)": lambda: plan.run(call),
        "    8 GEMMs alone": gemms,
        **{f"    hidden {layer.index} forward kernel": (lambda layer=layer: layer.forward(1)) for layer in layers},
        **{f"    hidden {layer.index} backward kernel": (lambda layer=layer: layer.backward(layer.dh, 1))
           for layer in layers},
        "    output layer kernel": lambda: plan.softmax(y, 1),
        "optimizer.step(grads)": lambda: solver.optimizer.step(model.grads),
    }
    with blas_limit(1):
        samples = {k: [] for k in parts}
        for _ in range(rounds):
            for name, fn in parts.items():
                t0 = clock()
                for _ in range(calls):
                    fn()
                samples[name].append((clock() - t0) / calls)
    print(f"digits Solver step parts, 1 thread, median of {rounds} rounds x {calls} calls [min-max]:")
    for name, ts in samples.items():
        print(f"  {name:34s} {statistics.median(ts) * 1e6:8.1f} us  [{min(ts) * 1e6:.1f}-{max(ts) * 1e6:.1f}]")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--block", type=int, default=3, help="consecutive calls per method per round")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--adam-so", default=None)
    ap.add_argument("--no-naive", action="store_true", help="time only torch and fused")
    ap.add_argument("--grain", action="store_true", help="only scan kernel sizes at 1 vs 2 threads")
    ap.add_argument("--digits", action="store_true", help="only the digits Solver step, part by part")
    ap.add_argument("--cpu-time", action="store_true",
                    help="--digits with process CPU time (a loaded machine: less noise from waiting)")
    args = ap.parse_args(argv)
    if args.grain:
        grain_scan(args.rounds)
        return
    if args.digits:
        digits_breakdown(args.rounds, time.process_time if args.cpu_time else time.perf_counter)
        return

    import torch
    blas_note = "fastopt._blas.limit_blas_threads"
    adam_step = load_adam(args.adam_so)
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT",
                                                       "GOMP_SPINCOUNT") if k in os.environ)
    print(f"env: {env or '(no thread-pool settings)'}")
    print(f"numpy {np.__version__}, torch {torch.__version__}, fastopt backend {fastopt.backend()}, "
          f"BLAS threads via {blas_note}, Adam: {'kernel adam_step' if adam_step else 'in-place NumPy'}")
    problem = make_problem(args.batch, DIMS, seed=0)
    X, y, params = problem
    for n in args.threads:
        fastopt.set_num_threads(n)
        with blas_limit(n):
            torch_step = build_torch_step(args.batch, DIMS, n, problem=problem)
            fused = FusedMLP(X, y, params, adam_step)
            fns = {"torch": torch_step, "fused": fused.step, "model": model_step(problem)}
            if n > 1:                       # OpenBLAS on n threads, the OpenMP kernels on one
                fns["fused-k1"] = FusedMLP(X, y, params, adam_step, max_threads=1).step
                fns["model-k2"] = model_step(problem, kernel_threads_2=True)
            if not args.no_naive:
                import fastopt.reference.mlp as twins
                fns["numpy"] = FusedMLP(X, y, params, None, twins).step
                naive = NaiveMLP(X, y, params)
                fns["naive"] = naive.step
            l_f, l_t = fused.step(), torch_step(sync=True)
            for fn in fns.values():                         # warm up
                fn()
            best = best_of(fns, args.rounds, args.block)
            fused.timer.enabled = True
            parts = {}
            for _ in range(args.rounds):
                fused.timer.totals = {}
                t0 = time.perf_counter()
                fused.step()
                total = time.perf_counter() - t0
                if total <= parts.get("total", float("inf")):
                    parts = dict(fused.timer.totals, total=total)
            fused.timer.enabled = False
            mm = raw_matmul(n, args.rounds, args.block)
        print(f"\n== {n} thread(s), batch {args.batch}, dims {DIMS}; first losses fused {l_f:.4f} torch {l_t:.4f}")
        for k, v in best.items():
            print(f"  {k:8s} {v * 1e3:8.1f} ms/step   {v / best['torch']:.2f}x torch   "
                  f"{v / best['fused']:.2f}x fused")
        other = parts["total"] - sum(v for k, v in parts.items() if k != "total")
        print("  fused breakdown (best instrumented step): " +
              ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in parts.items()) + f", python/other {other * 1e3:.1f} ms")
        for k, v in mm.items():
            print(f"  raw {k:38s} {v * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
