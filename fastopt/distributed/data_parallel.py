"""Data-parallel training of a model on MPI ranks (Horovod's model), deterministic or fast.

Every rank holds the same model and optimizer. ``DataParallel(model, optimizer, comm)`` broadcasts
rank 0's parameters and optimizer state; ``step(X, y)`` takes the GLOBAL minibatch (the same arrays on
every rank), splits it into ``shards`` fixed pieces whose boundaries depend only on the batch size and
the shard count (``shard_bounds``), never on the number of ranks; rank r computes the gradient sums of
its contiguous run of shards (``shards_of_rank``), the sums are combined once per step, and every rank
runs the same optimizer step on the same averaged gradient.

One flat buffer per shard: [gradient sum (all parameters, in model.params order) | loss sum | failed].
The two last slots ride along so that a step needs one collective: the loss for reporting, and a
"this rank failed" flag so that a rank whose shard raised makes EVERY rank raise ``RankFailure``
(with the failing ranks' messages) instead of the others waiting forever in the next collective.

Modes:
  deterministic  a reduce-scatter by columns in a fixed order, then an allgather: the row's columns
                 are cut into one slice per rank; rank k receives slice k of every shard row
                 (Alltoallv), adds those S pieces in shard order 0, 1, ..., S-1, and the summed slices
                 are gathered on every rank (Allgatherv). Every element is the same additions in the
                 same order whatever the rank count, so the parameters after training are bitwise
                 identical on 1, 2, 3, 4 ... ranks, and equal to one process (``comm="serial"``)
                 summing the same shards. A rank receives (S - its shards) / K + (K - 1) / K rows
                 and adds S / K rows' worth per step.
                 Condition: a shard's gradient must come out with the same bits on every rank,
                 i.e. the same fastopt and NumPy/BLAS builds, the same CPU kernels (an AVX2 and an
                 AVX-512 machine may differ) and the same BLAS thread count on every rank (a BLAS
                 may split a product's reduction differently with more threads).
  fast           each rank adds its own rows, then one in-place Allreduce(SUM) of one row: equal to
                 the deterministic result within float rounding (MPI's reduction order varies).
                 The ranks stay identical because an Allreduce hands every rank the same bits (the
                 MPI standard advises it; Open MPI does, and the tests check it on 2-4 ranks).

Gradients: ``model.loss(X_s, y_s)`` (``out=model.grads`` when the model takes it, as fastopt's
FullyConnectedNet does: the gradients are read from its buffer, not copied) returns the shard's MEAN gradient; times the shard size n_s it is
the shard's gradient SUM; the combined sum divided by the global batch size is the batch mean. The
model's regularization (``model.reg``, ``model.reg_type``: CS231n's 0.5*reg*sum(W^2) or reg*sum|W| on
the weights W1..WL) does not depend on the batch and must enter once, not once per shard: the shard
passes run with ``model.reg`` set to 0 (restored afterwards, also on error) and the term and its
gradient are added once to the combined mean, here. Models with batchnorm (statistics of the shard,
not of the global batch) or dropout (masks drawn from the model's one stream, in rank-dependent
order) are refused: both need hooks in the model (see DISTRIBUTED.md).

Checkpoints (``save_checkpoint`` / ``load_checkpoint``): rank 0 writes parameters, optimizer state,
the step count and the caller's ``extra`` plain data (e.g. the minibatch RNG state) with
fastopt.checkpoint; loading reads on rank 0 and broadcasts, so a checkpoint written on K ranks resumes
on any number of ranks (the shard boundaries do not depend on it) and, in deterministic mode,
continues bit for bit.
"""
import re
import sys
import traceback

import numpy as np

from .._validation import check_choice, check_scalar
from ..solver._solver import _loss_function
from ._comm import collectives

MODES = ("deterministic", "fast")
FORMAT = "fastopt.distributed/1"
_WEIGHT = re.compile(r"W\d+")     # the regularized parameters of fastopt's MLPs (CS231n names)


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


def _check_model(model):
    params = getattr(model, "params", None)
    if not hasattr(params, "keys") or not callable(getattr(model, "loss", None)):
        raise TypeError(f"model must have a `params` Mapping and a `loss(X, y)` method, got {type(model).__name__}")
    if getattr(model, "normalization", None) == "batchnorm":
        raise ValueError("data-parallel training of a batchnorm model is not supported yet: each shard "
                         "would normalize with its own statistics instead of the global batch's "
                         "(the model needs a hook to combine batch statistics across ranks)")
    if getattr(model, "use_dropout", False) or getattr(model, "dropout_keep_ratio", 1) != 1:
        raise ValueError("data-parallel training of a dropout model is not supported yet: the masks "
                         "come from one stream of the model in rank-dependent order (the model needs "
                         "a hook to seed the masks of each shard)")
    reg = check_scalar("model.reg", getattr(model, "reg", 0.0), low=0)
    reg_type = getattr(model, "reg_type", "l2")
    check_choice("model.reg_type", reg_type, ("l2", "l1"))
    return reg, reg_type


class DataParallel:
    """Train `model` with `optimizer` data-parallel over the ranks of `comm` (module docstring).

    model     : an object with ``params`` (Mapping name -> C-contiguous array, updated in place) and
                ``loss(X, y) -> (loss, grads)`` with grads averaged over the rows (fastopt's MLPs)
    optimizer : a fastopt optimizer over ``model.params`` (``step(grads)``, ``state_dict()``,
                ``load_state_dict()``)
    comm      : an mpi4py communicator; None: MPI.COMM_WORLD; "serial": one process, no MPI
    shards    : fixed pieces per global batch (>= the number of ranks)
    mode      : "deterministic" or "fast"
    """

    def __init__(self, model, optimizer, comm=None, *, shards=8, mode="deterministic"):
        self._reg, self._reg_type = _check_model(model)
        check_choice("mode", mode, MODES)
        shards = check_scalar("shards", shards, low=1, integer=True)
        for name in ("step", "state_dict", "load_state_dict"):
            if not callable(getattr(optimizer, name, None)):
                raise TypeError(f"optimizer must have a {name}() method, got {type(optimizer).__name__}")
        self.comm = collectives(comm)
        if shards < self.comm.size:
            raise ValueError(f"shards must be >= the number of ranks ({self.comm.size}), got {shards}")
        self.model, self.optimizer, self.shards, self.mode = model, optimizer, shards, mode
        self.rank, self.size = self.comm.rank, self.comm.size
        self.steps = 0
        self._loss = _loss_function(model)   # loss(X, y, out=model.grads) when offered: no copy per shard

        params = model.params
        self._names = list(params.keys())
        dtypes = {params[k].dtype for k in self._names}
        if len(dtypes) != 1:
            raise TypeError(f"model.params must share one dtype, got {sorted(map(str, dtypes))}")
        self.dtype = dtypes.pop()
        self._slices, offset = {}, 0
        for k in self._names:
            self._slices[k] = slice(offset, offset + params[k].size)
            offset += params[k].size
        self.n_params = offset
        self.width = offset + 2                      # + loss sum + failed flag
        self._total = np.zeros(self.width, self.dtype)
        self._grads = {k: self._total[self._slices[k]].reshape(params[k].shape) for k in self._names}
        self._mine = shards_of_rank(shards, self.size, self.rank)
        self._counts = [len(shards_of_rank(shards, self.size, r)) for r in range(self.size)]
        self._rows = np.zeros((len(self._mine), self.width), self.dtype)
        if mode == "deterministic":
            self._plan_columns()
        self.broadcast_state()

    def _plan_columns(self):
        """Buffers of the deterministic combine: column slice k = [cols[k], cols[k+1]) is rank k's."""
        K, W, mine = self.size, self.width, len(self._mine)
        self._cols = cols = [k * W // K for k in range(K + 1)]
        widths = [cols[k + 1] - cols[k] for k in range(K)]
        own = widths[self.rank]
        self._send = np.zeros(mine * W, self.dtype)       # rank-ordered blocks (mine, widths[k])
        self._send_blocks = [self._send[mine * cols[k]:mine * cols[k + 1]].reshape(mine, widths[k])
                             for k in range(K)]
        self._send_counts = [mine * w for w in widths]
        self._recv = np.zeros((self.shards, own), self.dtype)   # slice `rank` of every shard row
        self._recv_counts = [c * own for c in self._counts]
        self._slice = np.zeros(own, self.dtype)
        self._widths = widths

    # ------------------------------------------------------------ start-up and checkpoints
    def broadcast_state(self):
        """Rank 0's parameters (in place) and optimizer state onto every rank."""
        self.comm.bcast_arrays([self.model.params[k] for k in self._names])
        state = self.comm.bcast(self.optimizer.state_dict() if self.rank == 0 else None)
        if self.rank != 0:
            self.optimizer.load_state_dict(state)

    def bytes_per_step(self):
        """Bytes this rank receives in the step's combine (deterministic: its column slice of the
        other ranks' shard rows, then the other slices; fast: one row, the payload of the
        Allreduce, which a ring moves about twice; 0 on one rank)."""
        if self.size == 1:
            return 0
        if self.mode == "fast":
            return self.width * self.dtype.itemsize
        own = self._widths[self.rank]
        elements = (self.shards - len(self._mine)) * own + (self.width - own)
        return elements * self.dtype.itemsize

    def save_checkpoint(self, path, extra=None):
        """Rank 0 writes the training state to `path` (atomically); every rank returns once it has,
        or raises on every rank when rank 0 could not write."""
        from .. import checkpoint
        error = None
        if self.rank == 0:
            try:
                checkpoint.save(path, {
                    "format": FORMAT, "steps": self.steps, "shards": self.shards,
                    "params": {k: np.array(self.model.params[k]) for k in self._names},
                    "optimizer": self.optimizer.state_dict(), "extra": extra})
            except Exception as exc:  # noqa: BLE001 - reported on every rank below
                error = f"{type(exc).__name__}: {exc}"
        error = self.comm.bcast(error)
        if error is not None:
            raise RankFailure(f"rank 0 could not write the checkpoint {path!r}: {error}")

    def load_checkpoint(self, path):
        """Restore a checkpoint written by save_checkpoint (on any number of ranks); returns `extra`.

        Rank 0 reads and checks it, then broadcasts; nothing changes on any rank if it is unusable.
        """
        from .. import checkpoint
        state, error = None, None
        if self.rank == 0:
            try:
                state = checkpoint.load(path)
                self._check_state(state)
            except Exception as exc:  # noqa: BLE001 - reported on every rank below
                state, error = None, f"{type(exc).__name__}: {exc}"
        state, error = self.comm.bcast((state, error))
        if error is not None:
            raise ValueError(f"cannot resume from {path!r}: {error}")
        self.optimizer.load_state_dict(state["optimizer"])
        for k in self._names:
            self.model.params[k][...] = state["params"][k]
        self.steps = state["steps"]
        return state["extra"]

    def _check_state(self, state):
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} checkpoint")
        saved = state["params"]
        if list(saved) != self._names:
            raise ValueError(f"it holds parameters {list(saved)}, the model has {self._names}")
        for k in self._names:
            p = self.model.params[k]
            if saved[k].shape != p.shape or saved[k].dtype != p.dtype:
                raise ValueError(f"{k} is {saved[k].dtype}{saved[k].shape}, the model's {p.dtype}{p.shape}")
        if state["shards"] != self.shards:
            raise ValueError(f"it was trained with {state['shards']} shards, this run has {self.shards} "
                             f"(the shard count decides the summation order)")

    # ------------------------------------------------------------ one step
    def step(self, X, y):
        """One optimizer step on the global minibatch (X, y); returns its mean loss (with reg).

        Raises RankFailure on every rank when any rank's shard computation raised; then no parameter
        and no optimizer state has changed on any rank.
        """
        if not isinstance(X, np.ndarray) or not isinstance(y, np.ndarray):
            raise TypeError(f"X and y must be NumPy arrays, got {type(X).__name__} and {type(y).__name__}")
        if X.ndim < 1 or y.shape != X.shape[:1]:
            raise ValueError(f"y must have shape ({X.shape[0] if X.ndim else '?'},) to match X, got {y.shape}")
        bounds = shard_bounds(X.shape[0], self.shards)
        error = self._local_sums(X, y, bounds)
        total = self._combine()
        if total[-1] != 0:
            failures = [e for e in self.comm.allgather(error) if e is not None]
            raise RankFailure("data-parallel step failed on " + "; ".join(failures))
        n = X.shape[0]
        np.divide(total, n, out=total)
        loss = float(total[self.n_params]) + self._add_reg()
        self.optimizer.step(self._grads)
        self.steps += 1
        return loss

    def _local_sums(self, X, y, bounds):
        """Fill self._rows with this rank's shard sums; returns an error message or None."""
        rows = self._rows
        rows.fill(0)
        model = self.model
        saved_reg = getattr(model, "reg", None)
        try:
            if saved_reg is not None:
                model.reg = 0.0           # the batch-independent term is added once, in _add_reg
            for j, s in enumerate(self._mine):
                a, b = bounds[s], bounds[s + 1]
                loss, grads = self._loss(X[a:b], y[a:b])
                row, n_s = rows[j], b - a
                for k in self._names:
                    np.multiply(grads[k].reshape(-1), n_s, out=row[self._slices[k]])
                row[self.n_params] = loss * n_s
            return None
        except Exception as exc:  # noqa: BLE001 - every rank learns of it in step()
            rows.fill(0)
            rows[:, -1] = 1
            return f"rank {self.rank}: {type(exc).__name__}: {exc}"
        finally:
            if saved_reg is not None:
                model.reg = saved_reg

    def _combine(self):
        """The sum over all shards of the rows, identical on every rank (see the modes)."""
        total = self._total
        if self.mode == "fast" or self.size == 1:     # one rank: the same additions, no exchange
            _sum_in_order(self._rows, total)
            if self.size > 1:
                self.comm.allreduce_sum(total)
            return total
        for k, block in enumerate(self._send_blocks):
            np.copyto(block, self._rows[:, self._cols[k]:self._cols[k + 1]])
        self.comm.alltoallv(self._send, self._send_counts, self._recv.reshape(-1), self._recv_counts)
        _sum_in_order(self._recv, self._slice)      # rows arrive in rank order = shard order
        self.comm.allgatherv(self._slice, total, self._widths)
        return total

    def _add_reg(self):
        """Add the regularization gradient to the combined mean once; return its loss term."""
        if self._reg == 0:
            return 0.0
        term = 0.0
        for k in self._names:
            if not _WEIGHT.fullmatch(k):
                continue
            w = self.model.params[k]
            if self._reg_type == "l2":
                w64 = w.reshape(-1).astype(np.float64, copy=False)
                term += 0.5 * self._reg * float(np.dot(w64, w64))
                self._grads[k] += self._reg * w
            else:
                term += self._reg * float(np.abs(w).sum(dtype=np.float64))
                self._grads[k] += self._reg * np.sign(w)
        return term


def _sum_in_order(rows, out):
    """out = ((0 + rows[0]) + rows[1]) + ...: the fixed summation order of the deterministic mode."""
    out.fill(0)
    for row in rows:
        np.add(out, row, out=out)


def abort_on_error(fn, *args, comm=None, **kwargs):
    """Run fn(*args, **kwargs) on this rank; if it raises, print the error with the rank number to
    stderr and abort the whole MPI job (comm.Abort), so that no other rank waits forever.

    RankFailure is raised on every rank at once, so it is printed and exits with status 1 without an
    abort. comm: an mpi4py communicator (default COMM_WORLD) or "serial".
    """
    c = collectives(comm)
    try:
        return fn(*args, **kwargs)
    except RankFailure as exc:
        print(f"fastopt.distributed: rank {c.rank}/{c.size}: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - anything, or the other ranks hang
        traceback.print_exc()
        print(f"fastopt.distributed: rank {c.rank}/{c.size} failed ({type(exc).__name__}: {exc}); "
              f"aborting the job", file=sys.stderr, flush=True)
        c.abort(1)
