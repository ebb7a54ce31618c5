"""Step time of data-parallel training, split into compute, combine and update (DISTRIBUTED.md).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 mpiexec -n K python -m fastopt.distributed.bench \
        --model digits|cifar --mode deterministic|fast --shards S --steps N [--normalization ...]

Synthetic data of the model's shapes (float32); one warm-up step, then N timed steps. Rank 0 prints
one JSON line: medians and minima (ms) of the whole step and of its three parts: compute (the shard
passes), combine (every combine of the step: the gradient row and, with batchnorm, two per batchnorm
layer; waiting for the slowest rank included), update (the optimizer step); the bytes a rank receives
in the combines, and the parameter count. With --shards 1 on one rank the step is the plain model's
(GlobalLoss calls model.loss once) unless the model has batchnorm or dropout.
--allreduce instead times a bare in-place Allreduce of float32 buffers of several sizes (the
latency and bandwidth of the ring model).
"""
import argparse
import json
import time

import numpy as np

MODELS = {   # name -> (hidden dims, input dim, classes, batch size, normalization): BENCHMARKS.md's MLPs
    "digits": ([128, 64], 64, 10, 64, "batchnorm"),      # fastopt train's default model
    "cifar": ([1024, 1024], 3072, 10, 256, "none"),
}


def main(argv=None):
    import fastopt
    from fastopt.distributed import GlobalLoss

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(MODELS), default="digits")
    p.add_argument("--mode", choices=("deterministic", "fast"), default="deterministic")
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--normalization", choices=("none", "batchnorm", "layernorm"),
                   help="default: the model's (digits batchnorm, cifar none)")
    p.add_argument("--allreduce", action="store_true", help="time bare Allreduce calls instead")
    args = p.parse_args(argv)
    if args.allreduce:
        return allreduce(args.steps)
    hidden, d, c, n, norm = MODELS[args.model]
    norm = args.normalization or norm
    model = fastopt.FullyConnectedNet(hidden, input_dim=d, num_classes=c, weight_init="he", rng=0, reg=1e-4,
                                      normalization=None if norm == "none" else norm)
    gl = GlobalLoss(model, shards=args.shards, mode=args.mode)
    opt = fastopt.Adam(model.params, lr=1e-3)
    gl.broadcast(opt)
    r = np.random.default_rng(0)
    X, y = r.standard_normal((n, d)).astype(np.float32), r.integers(0, c, n)
    parts = {"step": [], "compute": [], "combine": [], "update": []}
    for i in range(args.steps + 1):
        t0, c0 = time.perf_counter(), gl.combine_seconds
        _, grads = gl.loss(X, y)
        t1 = time.perf_counter()
        opt.step(grads)
        t2 = time.perf_counter()
        comb = gl.combine_seconds - c0
        if i:
            for key, v in zip(parts, (t2 - t0, t1 - t0 - comb, comb, t2 - t1)):
                parts[key].append(1e3 * v)
    if gl.is_root:
        print(json.dumps({"model": args.model, "normalization": norm, "ranks": gl.size, "mode": gl.mode,
                          "shards": gl.shards, "batch": n, "n_params": gl.n_params,
                          "bytes_per_step": gl.bytes_per_step(),
                          **{f"{k}_ms": round(float(np.median(v)), 3) for k, v in parts.items()},
                          **{f"{k}_min_ms": round(float(np.min(v)), 3) for k, v in parts.items()}}))


def allreduce(repeats):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    for n in (1, 1 << 10, 1 << 14, 1 << 17, 1 << 20, 1 << 22):
        buf = np.ones(n, np.float32)
        times = []
        for _ in range(repeats + 1):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append(time.perf_counter() - t0)
        if comm.Get_rank() == 0:
            print(json.dumps({"ranks": comm.Get_size(), "bytes": 4 * n,
                              "median_us": round(1e6 * float(np.median(times[1:])), 1),
                              "min_us": round(1e6 * float(np.min(times[1:])), 1)}))


if __name__ == "__main__":
    main()
