"""Data-parallel training on MPI (optional extra: pip install 'fastopt[mpi]').

    from mpi4py import MPI
    from fastopt.distributed import DataParallel
    dp = DataParallel(model, fastopt.Adam(model.params, lr=1e-3), MPI.COMM_WORLD, shards=8)
    loss = dp.step(X_batch, y_batch)        # the same global batch on every rank

    dist = fastopt.distributed.for_solver(model, MPI.COMM_WORLD)   # what Solver(..., comm=) trains with
    loss, grads = dist.loss(X_batch, y_batch)

and from the shell: ``mpiexec -n 4 python -m fastopt.distributed train --data digits ...`` (the
options of ``fastopt train``). Batchnorm uses the global batch's statistics, dropout masks are seeded
per shard (fastopt.distributed.sharded). See global_loss.py for the model and DISTRIBUTED.md for
measurements. mpi4py is imported only when a communicator is needed, so this package imports without it.
"""
from .combine import RankFailure, shard_bounds, shards_of_rank
from .data_parallel import DataParallel, abort_on_error
from .global_loss import MODES, GlobalLoss, for_solver

__all__ = ["DataParallel", "GlobalLoss", "RankFailure", "MODES", "abort_on_error", "for_solver",
           "shard_bounds", "shards_of_rank"]
