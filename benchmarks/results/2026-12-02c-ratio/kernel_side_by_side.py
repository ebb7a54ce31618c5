"""Kernel alone, interleaved: main's build vs this branch, 16M elements, ratio off/on (raw script).

/tmp/ratio_base/ holds a copy of main 9ccff58's optim modules (its own build), loaded next to the
branch's under the same module name (Cython's multi-phase init allows it).
Usage: kernel_side_by_side.py REPEATS THREADS DTYPE [VARIANT] [RULES] [CLOCK]
VARIANT: avx2 | sse2 | avx512; CLOCK: wall (time.perf_counter) or cpu (time.thread_time: the calling
thread's CPU time, which leaves out the time the loaded machine had it descheduled; 1 thread only)."""
import importlib.machinery, importlib.util, statistics, sys, time
import numpy as np
sys.path.insert(0, "/work/wt-ratio")
from fastopt import _backend
reps, threads, dtype = int(sys.argv[1]), int(sys.argv[2]), np.dtype(sys.argv[3])
variant = sys.argv[4] if len(sys.argv) > 4 else "avx2"
wanted = sys.argv[5].split(",") if len(sys.argv) > 5 and sys.argv[5] else ["adam", "sgd_momentum", "nadam", "radam"]
clock_name = sys.argv[6] if len(sys.argv) > 6 else "wall"
clock = {"wall": time.perf_counter, "cpu": time.thread_time}[clock_name]
assert clock_name == "wall" or threads == 1, "the cpu clock counts the calling thread only"
def load(path, name):
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    m = importlib.util.module_from_spec(spec); loader.exec_module(m); return m
cur = _backend.compiled_variants("optim")[variant]
base_variant = "avx2" if variant == "avx512" else variant    # main has no AVX-512 optim build
suffix = "" if base_variant == "sse2" else "_" + base_variant
base = load(f"/tmp/ratio_base/_optim_kernels{suffix}.cpython-311-x86_64-linux-gnu.so", f"fastopt._optim_kernels{suffix}")
assert base is not cur
n = 1 << 24
rng = np.random.default_rng(0)
ADAM = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step_size=1e-3, bias_correction2_sqrt=1.0,
            decoupled=False, amsgrad=False, maximize=False, grad_scale=1.0, avg_weight=0.0)
RULES = {
 "adam": (3, 2, lambda k, plan, t: k.adam_multi(plan, **ADAM, track_ratio=t, n_threads=threads)),
 "sgd_momentum": (1, 1, lambda k, plan, t: k.sgd_multi(plan, lr=1e-2, weight_decay=0.0, momentum=0.9, dampening=0.0,
          nesterov=False, maximize=False, first_step=False, grad_scale=1.0, avg_weight=0.0, track_ratio=t, n_threads=threads)),
 "nadam": (2, 2, lambda k, plan, t: k.nadam_multi(plan, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
          bias_correction2=0.5, grad_coef=0.1, exp_avg_coef=0.5, decoupled=False, maximize=False, grad_scale=1.0,
          avg_weight=0.0, track_ratio=t, n_threads=threads)),
 "radam": (2, 2, lambda k, plan, t: k.radam_multi(plan, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
          bias_correction1=0.5, bias_correction2_sqrt=0.7, rect=0.9, rectified=True, decoupled=False, maximize=False,
          grad_scale=1.0, avg_weight=0.0, track_ratio=t, n_threads=threads)),
}
print(f"n={n} {dtype} threads={threads} clock={clock_name} branch variant={cur.SIMD_VARIANT} main variant={base.SIMD_VARIANT}")
for rule in wanted:
    nslots, nst, call = RULES[rule]
    def plan(mod):
        p = rng.standard_normal(n).astype(dtype); g = (1e-3*rng.standard_normal(n)).astype(dtype)
        # state arrays staggered by a few hundred bytes, as the optimizer API places them
        st = [np.zeros(n + 64 * (j + 1) * 4, dtype)[64*(j+1):64*(j+1)+n] for j in range(nst)]
        e = np.empty(0, dtype)
        return mod.StepPlan([p], [g], [st + [e] * (nslots - nst)], [e])
    variants = [("main off", base, False), ("main on", base, True), ("branch off", cur, False), ("branch on", cur, True)]
    plans = {v[0]: plan(v[1]) for v in variants}
    times = {v[0]: [] for v in variants}
    for r in range(reps + 1):
        for name, mod, track in variants:
            t0 = clock(); call(mod, plans[name], track); t = clock() - t0
            if r: times[name].append(t)
    md = {k: statistics.median(v) for k, v in times.items()}
    for name in times:
        t = times[name]; ref = md[name.split()[0] + " off"]
        print(f"{rule:13s} {threads}t {name:10s} {md[name]*1e3:7.2f} ms [{min(t)*1e3:.2f}-{max(t)*1e3:.2f}] {100*(md[name]/ref-1):+6.1f}% vs its off", flush=True)
