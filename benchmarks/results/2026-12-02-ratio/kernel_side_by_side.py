"""Kernel alone, interleaved: main's build vs this branch, 16M float32, ratio off/on (raw script).

/tmp/ratio_base/ held a copy of the AVX2 optim module built from main e0781a9, loaded next to the
branch's own under the same module name (Cython's multi-phase init allows it).
Usage: kernel_side_by_side.py REPEATS THREADS"""
import importlib.machinery, importlib.util, statistics, sys, time
import numpy as np
sys.path.insert(0, "/work/wt-ratio")
from fastopt import _backend
def load(path, name="fastopt._optim_kernels_avx2"):
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    m = importlib.util.module_from_spec(spec); loader.exec_module(m); return m
cur = _backend.kernels("optim")
base = load("/tmp/ratio_base/_optim_kernels_avx2.cpython-311-x86_64-linux-gnu.so")
assert base is not cur
n, reps, threads = 1 << 24, int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
RULES = {
 "adam": (2, lambda k, plan, t: k.adam_multi(plan, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step_size=1e-3,
          bias_correction2_sqrt=1.0, decoupled=False, amsgrad=False, maximize=False, grad_scale=1.0, avg_weight=0.0,
          track_ratio=t, n_threads=threads)),
 "sgd_momentum": (1, lambda k, plan, t: k.sgd_multi(plan, lr=1e-2, weight_decay=0.0, momentum=0.9, dampening=0.0,
          nesterov=False, maximize=False, first_step=False, grad_scale=1.0, avg_weight=0.0, track_ratio=t, n_threads=threads)),
}
for rule, (nst, call) in RULES.items():
    def plan(mod):
        p = rng.standard_normal(n).astype(np.float32); g = (1e-3*rng.standard_normal(n)).astype(np.float32)
        st = [np.zeros(n + 64 * (j + 1) * 4, np.float32)[64*(j+1):64*(j+1)+n] for j in range(nst)]
        e = np.empty(0, np.float32)
        return mod.StepPlan([p], [g], [st + [e] * (3 - nst if rule == "adam" else 0)], [e])
    variants = [("main off", base, False), ("main on", base, True), ("ratio off", cur, False), ("ratio on", cur, True)]
    plans = {v[0]: plan(v[1]) for v in variants}
    times = {v[0]: [] for v in variants}
    for r in range(reps + 1):
        for name, mod, track in variants:
            t0 = time.perf_counter(); call(mod, plans[name], track); t = time.perf_counter() - t0
            if r: times[name].append(t)
    md = {k: statistics.median(v) for k, v in times.items()}
    for name in times:
        t = times[name]; ref = md[name.split()[0] + " off"]
        print(f"{rule:13s} {threads}t {name:10s} {md[name]*1e3:7.2f} ms [{min(t)*1e3:.2f}-{max(t)*1e3:.2f}] {100*(md[name]/ref-1):+6.1f}% vs its off")
