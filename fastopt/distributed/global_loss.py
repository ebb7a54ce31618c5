"""The loss and gradient of a GLOBAL minibatch, computed by the ranks of an MPI job (Horovod's model).

``GlobalLoss(model, comm, shards=S, mode=M)`` (``for_solver``) has the interface of ``model.loss``
for training: ``loss(X, y) -> (loss, grads)``, where every rank passes the same global minibatch and
receives the same mean loss and mean gradients (regularization included) that one process would
compute for the whole batch. The batch is cut into S fixed shards (fastopt.distributed.combine); rank
r computes its shards' gradient SUMS into one row each, [gradient (all parameters, model.params
order) | loss sum], and one RowCombine adds all S rows (deterministic: in shard order, bitwise the same
for any rank count; fast: one Allreduce).

How a shard's row is computed:
  * models without batchnorm and dropout: ``model.loss(X_s, y_s)`` (``out=model.grads`` when the model
    takes it: fastopt's fused execution), its mean gradient times n_s;
  * models with batchnorm or dropout (fastopt's FullyConnectedNet): fastopt.distributed.sharded,
    which walks the model's block description layer by layer over the rank's shards with global
    batchnorm statistics (one small combine per batchnorm layer forward and one backward) and dropout
    masks seeded by (seed, step, shard).
The regularization (``model.reg``, ``model.reg_type``: CS231n's 0.5*reg*sum(W^2) or reg*sum|W| on the
weights W1..WL) does not depend on the batch: the shard passes run without it and it is added once.

A step is all or nothing on every rank: a rank whose shard work raises flags its rows in the next
combine, so every rank raises ``RankFailure`` (naming the failing ranks and their errors) at the same
collective, and no parameter, no running statistic and no step count changed anywhere.

``steps`` counts the successful training calls; it is the step of the dropout seeds, so a trainer that
resumes sets it to the step it resumes at.
"""
import re
import time

import numpy as np

from .._validation import check_choice, check_scalar
from ..solver._solver import _loss_function
from ._comm import collectives
from .combine import RankFailure, RowCombine, shard_bounds, shards_of_rank
from .sharded import ShardedNet, needs_sharded_execution

__all__ = ["GlobalLoss", "MODES", "for_solver"]

MODES = ("deterministic", "fast")
_WEIGHT = re.compile(r"W\d+")     # the regularized parameters of fastopt's MLPs (CS231n names)


def _check_model(model):
    params = getattr(model, "params", None)
    if not hasattr(params, "keys") or not callable(getattr(model, "loss", None)):
        raise TypeError(f"model must have a `params` Mapping and a `loss(X, y)` method, got {type(model).__name__}")
    if getattr(model, "frozen", None):
        raise ValueError("data-parallel training of a model with frozen layers is not supported "
                         "(its frozen parameters get no gradient to combine); unfreeze them first")
    reg = check_scalar("model.reg", getattr(model, "reg", 0.0), low=0)
    reg_type = getattr(model, "reg_type", "l2")
    check_choice("model.reg_type", reg_type, ("l2", "l1"))
    return reg, reg_type


class GlobalLoss:
    """The global-batch training loss of `model` over the ranks of `comm` (module docstring).

    model : an object with ``params`` (Mapping name -> C-contiguous array, updated in place) and
            ``loss(X, y) -> (loss, grads)`` averaged over the rows (fastopt's MLPs); batchnorm and
            dropout need fastopt's FullyConnectedNet (its block description)
    comm  : an mpi4py communicator; None: MPI.COMM_WORLD; "serial": one process, no MPI
    shards: fixed pieces per global batch (>= the number of ranks)
    mode  : "deterministic" or "fast"
    seed  : int >= 0, the dropout masks' seed (with the step and the shard)
    """

    def __init__(self, model, comm=None, *, shards=8, mode="deterministic", seed=0):
        self._reg, self._reg_type = _check_model(model)
        check_choice("mode", mode, MODES)
        shards = check_scalar("shards", shards, low=1, integer=True)
        self.seed = check_scalar("seed", seed, low=0, integer=True)
        self.comm = collectives(comm)
        if shards < self.comm.size:
            raise ValueError(f"shards must be >= the number of ranks ({self.comm.size}), got {shards}")
        params = model.params
        names = list(params.keys())
        dtypes = {params[k].dtype for k in names}
        if len(dtypes) != 1:
            raise TypeError(f"model.params must share one dtype, got {sorted(map(str, dtypes))}")
        dtype = dtypes.pop()
        self.net = (ShardedNet(model, lambda width: RowCombine(self.comm, shards, width, np.float64, mode))
                    if needs_sharded_execution(model) else None)
        if self.net is not None:
            self.net.check()
        self.model, self.shards, self.mode, self.dtype = model, shards, mode, dtype
        self.rank, self.size = self.comm.rank, self.comm.size
        self.steps = 0
        self.combine_seconds = 0.0           # time spent in combines (waiting included): the benchmark's split
        self._names = names
        self._slices, offset = {}, 0
        for k in names:
            self._slices[k] = slice(offset, offset + params[k].size)
            offset += params[k].size
        self.n_params = offset
        self._rows = RowCombine(self.comm, shards, offset + 1, dtype, mode)     # + the loss sum
        self._mine = shards_of_rank(shards, self.size, self.rank)
        self._loss = _loss_function(model)   # loss(X, y, out=model.grads) when offered: no copy per shard
        total = self._rows.total                                  # the combined row: the gradients are views
        self._grads = {k: total[self._slices[k]].reshape(params[k].shape) for k in names}

    @property
    def is_root(self):
        """Whether this is rank 0 (the rank that prints and writes files)."""
        return self.rank == 0

    def state_arrays(self):
        """The arrays every rank must hold identically: the parameters, then batchnorm's running
        statistics (in layer order)."""
        return [self.model.params[k] for k in self._names] + ([] if self.net is None else self.net.running())

    def broadcast(self, optimizer=None):
        """Rank 0's parameters and running statistics (in place) and `optimizer`'s state onto every rank."""
        self.comm.bcast_arrays(self.state_arrays())
        if optimizer is not None:
            state = self.comm.bcast(optimizer.state_dict() if self.rank == 0 else None)
            if self.rank != 0:
                optimizer.load_state_dict(state)

    def bytes_per_step(self):
        """Bytes this rank receives in one step's combines (the gradient row, and per batchnorm layer
        its statistics forward and its sums backward)."""
        small = [] if self.net is None else self.net.combiners
        return self._rows.bytes_received() + sum(c.bytes_received() for c in small)

    # ------------------------------------------------------------ one step
    def loss(self, X, y):
        """(mean loss with the regularization, {name: mean gradient}) of the global batch (X, y).

        The gradients are views into one buffer, overwritten by the next call. Raises RankFailure on
        every rank when any rank's shard work raised; then nothing changed on any rank.
        """
        if not isinstance(X, np.ndarray) or not isinstance(y, np.ndarray):
            raise TypeError(f"X and y must be NumPy arrays, got {type(X).__name__} and {type(y).__name__}")
        if X.ndim < 1 or y.shape != X.shape[:1]:
            raise ValueError(f"y must have shape ({X.shape[0] if X.ndim else '?'},) to match X, got {y.shape}")
        n = X.shape[0]
        bounds = shard_bounds(n, self.shards)
        rows = self._rows.rows
        self._error, self._collectives = None, 0
        try:
            if self.net is None:
                self._model_sums(X, y, bounds, rows)
            else:
                self.net.check()
                self._check_batch(X, y)
                self.net.gradient_sums(X, y, bounds, self._mine, rows, self._slices, (self.seed, self.steps),
                                       self._sync)
        except RankFailure:
            raise
        except Exception as exc:  # noqa: BLE001 - every rank learns of it at the next combine
            self._error = f"rank {self.rank}: {type(exc).__name__}: {exc}"
            plan = [] if self.net is None else self.net.combiners
            self._sync(plan[self._collectives] if self._collectives < len(plan) else self._rows)
        total = self._sync(self._rows)
        np.divide(total, n, out=total)
        loss = float(total[-1]) + self._add_reg()
        if self.net is not None:
            self.net.commit()
        self.steps += 1
        return loss, self._grads

    def _sync(self, combiner):
        """combiner.combine() with this rank's failure flag; RankFailure on every rank if any failed."""
        self._collectives += 1
        start = time.perf_counter()
        total = combiner.combine(failed=self._error is not None)
        self.combine_seconds += time.perf_counter() - start
        if total is None:
            failures = [e for e in self.comm.allgather(self._error) if e is not None]
            raise RankFailure("data-parallel step failed on " + "; ".join(failures))
        return total

    def _check_batch(self, X, y):
        """The checks model.loss would make (the sharded execution calls layer functions directly)."""
        features = int(np.prod(X.shape[1:])) if X.ndim >= 2 else 0
        if X.ndim < 2 or X.dtype.kind not in "fiu" or features != self.model.input_dim:
            raise ValueError(f"X must be a real array (N, ...) of {self.model.input_dim} features per row, "
                             f"got {X.dtype} {X.shape}")
        if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= self.model.num_classes:
            raise ValueError(f"y must hold integer labels in [0, {self.model.num_classes - 1}], got {y.dtype} "
                             f"values in [{y.min()}, {y.max()}]")

    def _model_sums(self, X, y, bounds, rows):
        """rows[j] = the gradient and loss sums of shard mine[j] from model.loss (no regularization)."""
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
                row[-1] = loss * n_s
        finally:
            if saved_reg is not None:
                model.reg = saved_reg

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


def for_solver(model, comm, *, shards=8, mode="deterministic", seed=0):
    """The object a Solver trains with on the ranks of `comm` (``Solver(..., comm=comm)``):
    ``.loss(X, y) -> (loss, grads)`` of the global minibatch every rank passes, ``.broadcast(optimizer)``
    (rank 0's parameters, running statistics and optimizer state onto every rank), ``.is_root``, and
    ``.steps`` (set it to the iteration a resumed run continues from: it seeds the dropout masks)."""
    return GlobalLoss(model, comm, shards=shards, mode=mode, seed=seed)
