"""Where the Solver's random draws (minibatches, accuracy subsamples) come from.

* seed=None: CS231n's own draws, ``np.random.choice(N, size)`` on NumPy's global state, so a
  notebook's ``np.random.seed(231)`` reproduces its run. The state is shared by everything in the
  process (and by every thread): a checkpoint stores it and loading one restores it.
* seed=int: fastopt's reproducible streams, two Generators spawned from ``SeedSequence(seed)``
  (minibatches, subsamples), private to the Solver: bitwise the same run in any thread.

The minibatches of a seeded Solver are drawn AHEAD, ``AHEAD`` of them in one ``integers`` call:
the 32-bit stream of the bit generator (PCG64 buffers the other half of a 64-bit draw in its
state) runs on across calls, so one call of AHEAD x size values gives the values AND leaves the
state that AHEAD calls of size values give (tests/test_solver_draws.py compares both); the call's
overhead (~4-7 us, the values themselves take well under 1) is paid once per AHEAD steps. What
reads or sets the state (``state()``, ``set_state()``, the ``batch_rng`` attribute, a draw of
another shape) first rewinds the Generator to where one call per minibatch taken would have left
it, so checkpoints, resume and a caller's own draws from ``solver.rng`` see the stream as before.
"""
import numpy as np

from .._validation import check_rng_state


class GlobalDraws:
    """CS231n: np.random.choice on NumPy's global RandomState."""

    kind = "numpy-global"
    batch_rng = eval_rng = None

    def batch(self, n, size):
        return np.random.choice(n, size)

    subsample = batch

    def state(self):
        return {"kind": self.kind, "state": np.random.get_state(legacy=False)}

    def set_state(self, state):
        np.random.set_state(state["state"])

    @staticmethod
    def check(state, where):
        try:
            np.random.RandomState().set_state(state["state"])  # a probe: the global state is untouched
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"{where}['state'] is not a NumPy global RandomState state: {exc}") from exc


class SeededDraws:
    """fastopt: a Generator for minibatches and one for subsamples, from SeedSequence(seed); the
    minibatches drawn AHEAD at a time (module docstring)."""

    kind = "generators"
    AHEAD = 32

    def __init__(self, seed=None):
        batch_ss, eval_ss = np.random.SeedSequence(seed).spawn(2)
        self._batch_rng = np.random.default_rng(batch_ss)
        self.eval_rng = np.random.default_rng(eval_ss)
        self._ahead = None     # (AHEAD, size) read-only block of minibatch indices drawn ahead
        self._taken = 0        # its rows handed out
        self._shape = None     # the (n, size) it was drawn for
        self._origin = None    # the bit generator's state before the block was drawn

    @property
    def batch_rng(self):
        """The minibatch Generator, where one draw per minibatch taken leaves it."""
        self._rewind()
        return self._batch_rng

    def batch(self, n, size):
        ahead, i = self._ahead, self._taken
        if ahead is None or i == self.AHEAD or self._shape != (n, size):
            self._rewind()
            rng = self._batch_rng
            self._origin = rng.bit_generator.state
            ahead = self._ahead = rng.integers(0, n, size=(self.AHEAD, size))
            ahead.flags.writeable = False   # rows are handed out as views
            self._shape, i = (n, size), 0
        self._taken = i + 1
        return ahead[i]

    def _rewind(self):
        """Drop the block drawn ahead; the Generator as if only the rows taken had been drawn."""
        if self._ahead is None:
            return
        rng = self._batch_rng
        rng.bit_generator.state = self._origin
        if self._taken:
            n, size = self._shape
            rng.integers(0, n, size=(self._taken, size))
        self._ahead = self._origin = self._shape = None
        self._taken = 0

    def subsample(self, n, size):
        return self.eval_rng.integers(0, n, size=size)

    def state(self):
        return {"kind": self.kind, "batch": self.batch_rng.bit_generator.state,
                "eval": self.eval_rng.bit_generator.state}

    def set_state(self, state):
        self.batch_rng.bit_generator.state = state["batch"]
        self.eval_rng.bit_generator.state = state["eval"]

    @staticmethod
    def check(state, where):
        if set(state) != {"kind", "batch", "eval"}:
            raise ValueError(f"{where} must hold 'kind', 'batch' and 'eval', got {sorted(map(repr, state))}")
        check_rng_state(f"{where}['batch']", state["batch"])
        check_rng_state(f"{where}['eval']", state["eval"])


_KINDS = {cls.kind: cls for cls in (GlobalDraws, SeededDraws)}


def make_draws(seed):
    return GlobalDraws() if seed is None else SeededDraws(seed)


def draws_from_state(state, where):
    """New draws holding `state` (validated first; the global state is set only by set_state)."""
    if not isinstance(state, dict) or state.get("kind") not in _KINDS:
        raise ValueError(f"{where} must be a dict with 'kind' in {sorted(_KINDS)}")
    cls = _KINDS[state["kind"]]
    if cls is GlobalDraws and set(state) != {"kind", "state"}:
        raise ValueError(f"{where} must hold 'kind' and 'state', got {sorted(map(repr, state))}")
    cls.check(state, where)
    return cls()
