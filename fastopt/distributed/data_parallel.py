"""Data-parallel training on MPI ranks: a GlobalLoss (fastopt.distributed.global_loss), an optimizer
every rank steps identically, and checkpoints.

``DataParallel(model, optimizer, comm)`` broadcasts rank 0's parameters, batchnorm running statistics
and optimizer state; ``step(X, y)`` takes the GLOBAL minibatch (the same arrays on every rank), computes
its mean loss and gradient over the ranks (deterministic: bitwise the same on any number of ranks;
fast: one Allreduce, equal within rounding) and runs the optimizer step, the same on every rank.

Checkpoints (``save_checkpoint`` / ``load_checkpoint``): rank 0 writes parameters, running statistics,
optimizer state, the step count and the caller's ``extra`` plain data (e.g. the minibatch RNG state)
with fastopt.checkpoint; loading reads on rank 0 and broadcasts, so a checkpoint written on K ranks
resumes on any number of ranks (the shard boundaries do not depend on it) and, in deterministic mode,
continues bit for bit (the step count seeds the dropout masks).
"""
import sys
import traceback

import numpy as np

from ._comm import collectives
from .combine import RankFailure
from .global_loss import GlobalLoss

FORMAT = "fastopt.distributed/2"


class DataParallel:
    """Train `model` with `optimizer` data-parallel over the ranks of `comm` (module docstring).

    model, comm, shards, mode, seed : as fastopt.distributed.GlobalLoss
    optimizer : a fastopt optimizer over ``model.params`` (``step(grads)``, ``state_dict()``,
                ``load_state_dict()``)
    """

    def __init__(self, model, optimizer, comm=None, *, shards=8, mode="deterministic", seed=0):
        for name in ("step", "state_dict", "load_state_dict"):
            if not callable(getattr(optimizer, name, None)):
                raise TypeError(f"optimizer must have a {name}() method, got {type(optimizer).__name__}")
        self.loss = GlobalLoss(model, comm, shards=shards, mode=mode, seed=seed)
        self.model, self.optimizer = model, optimizer
        self.shards, self.mode, self.rank, self.size = shards, mode, self.loss.rank, self.loss.size
        self.n_params = self.loss.n_params
        self.comm = self.loss.comm
        self.loss.broadcast(optimizer)

    @property
    def steps(self):
        """Optimizer steps taken (survives checkpoints)."""
        return self.loss.steps

    def bytes_per_step(self):
        """Bytes this rank receives in one step's combines (GlobalLoss.bytes_per_step)."""
        return self.loss.bytes_per_step()

    def step(self, X, y):
        """One optimizer step on the global minibatch (X, y); returns its mean loss (with reg).

        Raises RankFailure on every rank when any rank's shard computation raised; then no parameter,
        no running statistic and no optimizer state has changed on any rank.
        """
        loss, grads = self.loss.loss(X, y)
        self.optimizer.step(grads)
        return loss

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path, extra=None):
        """Rank 0 writes the training state to `path` (atomically); every rank returns once it has,
        or raises on every rank when rank 0 could not write."""
        from .. import checkpoint
        error = None
        if self.rank == 0:
            try:
                checkpoint.save(path, {
                    "format": FORMAT, "steps": self.steps, "shards": self.shards,
                    "state": [np.array(a) for a in self.loss.state_arrays()],
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
        for mine, saved in zip(self.loss.state_arrays(), state["state"]):
            mine[...] = saved
        self.loss.steps = state["steps"]
        return state["extra"]

    def _check_state(self, state):
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} checkpoint")
        saved, mine = state["state"], self.loss.state_arrays()
        if not isinstance(saved, list) or len(saved) != len(mine):
            raise ValueError(f"it holds {len(saved) if isinstance(saved, list) else 'no'} state arrays, "
                             f"the model has {len(mine)} (parameters, running statistics)")
        for i, (s, m) in enumerate(zip(saved, mine)):
            if not isinstance(s, np.ndarray) or s.shape != m.shape or s.dtype != m.dtype:
                raise ValueError(f"state array {i} is {getattr(s, 'dtype', type(s).__name__)}"
                                 f"{getattr(s, 'shape', '')}, the model's {m.dtype}{m.shape}")
        if state["shards"] != self.shards:
            raise ValueError(f"it was trained with {state['shards']} shards, this run has {self.shards} "
                             f"(the shard count decides the summation order)")


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
