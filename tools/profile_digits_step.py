"""CPU time per call of the digits Solver step and its parts (BENCHMARKS.md, the AVX-512 targets
section): the step, model.loss, the optimizer step (its validation, flat step and kernel), and the
MLP kernels of each layer (batchnorm-ReLU forward/backward, the output layer's softmax).

    .venv/bin/python tools/profile_digits_step.py        (FASTOPT_SIMD=avx2 etc. to compare builds)

Medians [min] of process_time over 9 loops of calls on one thread, so that other jobs on a shared
machine inflate the figures less than wall-clock time does. The digits MLP of `fastopt bench --suite
small` (64-128-64-10, batchnorm, batch 64, Adam), float32.
"""
import time

import numpy as np
from threadpoolctl import threadpool_limits

from fastopt import _backend
from fastopt.bench.small import _digits_data, solver_step


def med(f, n=3000, reps=9):
    out = []
    for _ in range(reps):
        t = time.process_time()
        for _ in range(n):
            f()
        out.append((time.process_time() - t) / n * 1e6)
    return f"{np.median(out):7.2f} us [{min(out):.2f}]"


def main():
    data = _digits_data(np.float32)
    step = solver_step(data, np.float32)
    s, m = step.solver, step.model
    for _ in range(300):
        step()
    opt, fl = s.optimizer, s.optimizer._flat
    X, y = data["X_train"][:64], data["y_train"][:64]
    _, grads = m.loss(X, y, out=m.grads)
    print("variants:", {f: _backend.simd_variant(f) for f in ("optim", "mlp")})
    print("solver step         ", med(step))
    print("model.loss(out=)    ", med(lambda: m.loss(X, y, out=m.grads)))
    print("optimizer.step      ", med(lambda: opt.step(grads)))
    print("  its validation    ", med(lambda: opt._prepare(grads, True)))
    lr, g2 = opt._prepare(grads, True)
    gspan = fl.grad_span(g2)
    print("  its flat step     ", med(lambda: fl.step(opt.configs, lr, gspan, False, None, True)))
    _, kernel, arrays, _ = fl.kernel
    from fastopt.optim.functional import kernel_scalars
    values = dict(fl.values[1], **{fl.form.step: opt.configs[next(iter(fl.params))].get(fl.form.step, 0)})
    scalars, _ = kernel_scalars(fl.rule, fl.form, values, False)
    print(f"  its kernel ({fl.span.size} elements)",
          med(lambda: kernel(param=fl.span, grad=gspan, **arrays, **scalars, n_threads=1)))
    plan = m._workspaces.get(64).plans[True]
    for layer in plan.hidden:
        dh = layer.dh.copy()
        print(f"layer {layer.index} ({layer.size} elements) forward ", med(lambda: layer.forward(1)))
        print(f"layer {layer.index} ({layer.size} elements) backward", med(lambda: layer.backward(dh, 1)))
    scores0 = plan.scores.copy()
    labels = s.y_train[:64]

    def softmax():           # on fresh scores each call (the kernel adds the bias in place)
        np.copyto(plan.scores, scores0)
        plan.softmax(labels, 1)
    print("output layer (bias, softmax, loss, grads)", med(softmax), "(a 640-element copy included)")


if __name__ == "__main__":
    with threadpool_limits(1):
        main()
