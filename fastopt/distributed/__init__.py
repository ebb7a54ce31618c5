"""Data-parallel training on MPI (optional extra: pip install 'fastopt[mpi]').

    from mpi4py import MPI
    from fastopt.distributed import DataParallel
    dp = DataParallel(model, fastopt.Adam(model.params, lr=1e-3), MPI.COMM_WORLD, shards=8)
    loss = dp.step(X_batch, y_batch)        # the same global batch on every rank

and from the shell: ``mpiexec -n 4 python -m fastopt.distributed train --data digits ...`` (the
options of ``fastopt train``). See data_parallel.py for the model and DISTRIBUTED.md for measurements.
mpi4py is imported only when a communicator is needed, so this package imports without it.
"""
from .data_parallel import MODES, DataParallel, RankFailure, abort_on_error, shard_bounds, shards_of_rank

__all__ = ["DataParallel", "RankFailure", "MODES", "abort_on_error", "shard_bounds", "shards_of_rank"]
