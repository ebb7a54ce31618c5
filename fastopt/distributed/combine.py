"""Shards and their combine: every rank's per-shard rows summed over ALL shards, the same on every rank.

A step cuts the global minibatch into S fixed shards (``shard_bounds``: boundaries depend on the batch
size and S only), rank r owns the contiguous run ``shards_of_rank(S, K, r)``, and every quantity that
needs the whole batch (the gradient, batchnorm's statistics and its backward sums) is a per-shard row
combined by a ``RowCombine``:

  deterministic  every element is ((0 + row_0) + row_1) + ... + row_{S-1}, whatever K: the same bits on
                 1, 2, 3, ... ranks. Wide rows (the gradient): a reduce-scatter by columns (Alltoallv
                 of column slices, each rank adds its slice of the S rows in shard order) then an
                 Allgatherv of the summed slices. Narrow rows (batchnorm's per-feature sums): one
                 Allgatherv of all S rows, each rank adds them in shard order (one collective instead of
                 two; the same additions, so the same bits).
  fast           each rank adds its own rows, then one in-place Allreduce(SUM) (MPI's order: equal within
                 rounding; every rank receives the same bits).

Each row carries one more column, the "failed" flag: a rank whose local work raised sends rows flagged
1, so the combine tells EVERY rank at once and each raises ``RankFailure`` instead of the others
waiting forever in their next collective.
"""
import numpy as np

from .._validation import check_scalar

__all__ = ["RankFailure", "RowCombine", "shard_bounds", "shards_of_rank"]

NARROW = 1 << 13     # rows of at most this many elements take the one-collective deterministic combine


class RankFailure(RuntimeError):
    """A rank failed during a step; raised on EVERY rank, naming the failing ranks and their errors."""


def shard_bounds(batch_size, shards):
    """Row boundaries [b_0 = 0, b_1, ..., b_S = batch_size] of S shards: b_s = s * batch_size // S.

    Depends only on the batch size and the shard count (not on the rank count); sizes differ by <= 1.
    """
    batch_size = check_scalar("batch_size", batch_size, low=1, integer=True)
    shards = check_scalar("shards", shards, low=1, integer=True)
    if shards > batch_size:
        raise ValueError(f"the batch of {batch_size} rows cannot be split into {shards} non-empty "
                         f"shards: use a batch of at least {shards} rows or fewer shards")
    return [s * batch_size // shards for s in range(shards + 1)]


def shards_of_rank(shards, size, rank):
    """The contiguous run of shard indices rank `rank` of `size` computes: range(r*S//R, (r+1)*S//R)."""
    return range(rank * shards // size, (rank + 1) * shards // size)


def _sum_in_order(rows, out):
    """out = ((0 + rows[0]) + rows[1]) + ...: the fixed summation order of the deterministic mode."""
    out.fill(0)
    for row in rows:
        np.add(out, row, out=out)


class RowCombine:
    """Sum per-shard rows of `width` elements of `dtype` over all `shards` shards of the ranks of `comm`
    (a fastopt.distributed._comm collectives object). This rank writes its rows into ``rows``
    (one per owned shard, in shard order), then ``combine(failed)`` returns the total (width,),
    identical on every rank, or raises RankFailure on every rank when any rank passed failed=True.
    """

    def __init__(self, comm, shards, width, dtype, mode):
        self.comm, self.shards, self.mode, self.width = comm, shards, mode, width
        self.dtype = np.dtype(dtype)
        K, W = comm.size, width + 1                   # + the failed flag
        self._counts = [len(shards_of_rank(shards, K, r)) for r in range(K)]
        mine = self._counts[comm.rank]
        self._buf = np.zeros((mine, W), self.dtype)
        self.rows = self._buf[:, :width]
        self._total = np.zeros(W, self.dtype)
        self.total = self._total[:width]              # what combine() returns: one buffer, reused
        self.strategy = ("sum" if mode == "fast" or K == 1 else
                         "allgather" if W <= NARROW else "columns")
        if self.strategy == "allgather":
            self._all = np.zeros((shards, W), self.dtype)
        elif self.strategy == "columns":
            self._plan_columns(K, W, mine)

    def _plan_columns(self, K, W, mine):
        """Column slice k = [cols[k], cols[k+1]) of the rows is rank k's to sum."""
        self._cols = cols = [k * W // K for k in range(K + 1)]
        self._widths = widths = [cols[k + 1] - cols[k] for k in range(K)]
        own = widths[self.comm.rank]
        self._send = np.zeros(mine * W, self.dtype)       # rank-ordered blocks (mine, widths[k])
        self._send_blocks = [self._send[mine * cols[k]:mine * cols[k + 1]].reshape(mine, widths[k])
                             for k in range(K)]
        self._send_counts = [mine * w for w in widths]
        self._recv = np.zeros((self.shards, own), self.dtype)   # slice `rank` of every shard row
        self._recv_counts = [c * own for c in self._counts]
        self._slice = np.zeros(own, self.dtype)

    def bytes_received(self):
        """Bytes this rank receives in one combine (fast: the row an Allreduce reduces, which a ring
        moves about twice; 0 on one rank)."""
        K, W, mine = self.comm.size, self.width + 1, self._counts[self.comm.rank]
        if K == 1:
            return 0
        if self.strategy == "sum":
            elements = W
        elif self.strategy == "allgather":
            elements = (self.shards - mine) * W
        else:
            own = self._widths[self.comm.rank]
            elements = (self.shards - mine) * own + W - own
        return elements * self.dtype.itemsize

    def combine(self, failed=False):
        """``total``: the sum over all shards of the rows (overwritten by the next combine), or None
        when any rank passed failed=True."""
        buf, total = self._buf, self._total
        buf[:, -1] = 0
        if failed:
            buf.fill(0)
            buf[:, -1] = 1
        if self.strategy == "sum":
            _sum_in_order(buf, total)
            if self.comm.size > 1:
                self.comm.allreduce_sum(total)
        elif self.strategy == "allgather":
            self.comm.allgatherv(buf.reshape(-1), self._all.reshape(-1), [c * buf.shape[1] for c in self._counts])
            _sum_in_order(self._all, total)      # rows arrive in rank order = shard order
        else:
            for k, block in enumerate(self._send_blocks):
                np.copyto(block, buf[:, self._cols[k]:self._cols[k + 1]])
            self.comm.alltoallv(self._send, self._send_counts, self._recv.reshape(-1), self._recv_counts)
            _sum_in_order(self._recv, self._slice)
            self.comm.allgatherv(self._slice, total, self._widths)
        return None if total[-1] != 0 else self.total
