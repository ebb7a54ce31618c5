"""The few collectives data-parallel training needs, on an mpi4py communicator or on one process.

``Collectives(comm)`` wraps an ``mpi4py.MPI.Comm``; ``Serial()`` is the same interface for a single
process without MPI (nothing to exchange), which is what makes "one process summing the same shards"
runnable anywhere, mpi4py installed or not. Buffers are NumPy arrays handed to mpi4py's buffer
methods (no pickling on the per-step path); small Python objects (optimizer state at start-up, error
messages) go through the pickle-based lowercase methods.
"""
import sys

import numpy as np


def import_mpi():
    """mpi4py's MPI module, or an ImportError that says how to get it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("fastopt.distributed needs mpi4py and an MPI library: "
                          "pip install 'fastopt[mpi]'") from exc
    return MPI


class Serial:
    """One process: rank 0 of 1; every collective is a local copy or nothing."""

    rank, size = 0, 1

    def alltoallv(self, send, send_counts, recv, recv_counts):
        recv[...] = send

    def allgatherv(self, send, recv, counts):
        recv[...] = send

    def allreduce_sum(self, buf):
        pass

    def bcast_arrays(self, arrays):
        pass

    def bcast(self, obj):
        return obj

    def allgather(self, obj):
        return [obj]

    def abort(self, code):
        sys.exit(code)


class Collectives:
    """`comm`'s collectives in the shapes the trainer uses (see the module docstring)."""

    def __init__(self, comm):
        self._MPI = import_mpi()
        if not isinstance(comm, self._MPI.Comm):
            raise TypeError(f"comm must be an mpi4py.MPI.Comm (e.g. MPI.COMM_WORLD), got {type(comm).__name__}")
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    def alltoallv(self, send, send_counts, recv, recv_counts):
        """send[block k] (send_counts[k] elements, blocks in rank order) goes to rank k; recv holds
        what every rank sent here, in rank order. 1-D contiguous arrays."""
        self.comm.Alltoallv([send, send_counts], [recv, recv_counts])

    def allgatherv(self, send, recv, counts):
        """Every rank's `send` (counts[r] elements) concatenated in rank order into `recv`."""
        self.comm.Allgatherv(send, [recv, counts])

    def allreduce_sum(self, buf):
        self.comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)

    def bcast_arrays(self, arrays):
        """Rank 0's contents into every rank's arrays, in place (the arrays are never rebound)."""
        for a in arrays:
            if a.flags.c_contiguous:
                self.comm.Bcast(a, root=0)
            else:
                tmp = np.ascontiguousarray(a)
                self.comm.Bcast(tmp, root=0)
                a[...] = tmp

    def bcast(self, obj):
        return self.comm.bcast(obj, root=0)

    def allgather(self, obj):
        return self.comm.allgather(obj)

    def abort(self, code):
        self.comm.Abort(code)


def collectives(comm):
    """The Collectives of `comm`: None means MPI.COMM_WORLD, "serial" one process without MPI."""
    if isinstance(comm, Serial) or (isinstance(comm, str) and comm == "serial"):
        return Serial()
    if isinstance(comm, str):
        raise ValueError(f'comm must be an mpi4py communicator, None (COMM_WORLD) or "serial", got {comm!r}')
    if comm is None:
        comm = import_mpi().COMM_WORLD
    return Collectives(comm)
