"""Preallocated buffers of FullyConnectedNet's fused execution, one set per (batch size, dtype).

A training step writes every intermediate (matmul outputs, activations, upstream gradients,
batch statistics) into these arrays with ``out=``, so a step at a batch size seen before
allocates no array of the batch's size (dropout, a layer function, allocates its output and mask).
The model keeps the buffers of the last ``WorkspaceCache.KEEP`` batch sizes (the training batch
and, say, the validation batch).

Per hidden layer i (D = hidden_dims[i], N = batch):
  z[i]    (N, D)  x @ W (layernorm: then + b in place, the layernorm input kept for backward)
  r[i]    (N, D)  activation output (before dropout; its sign is the ReLU mask in backward)
  dh[i]   (N, D)  grad wrt the layer output; turned into grad wrt z[i] in place where the kernel allows
  tmp[i]  (N, D)  with `scratch` (layernorm; a norm with another activation than ReLU): the norm's
                  output when the activation's backward needs it, the norm backward's output
  mean[i], inv_std[i]  (D,) batchnorm or (N,) layernorm statistics
and for the output layer scores, dscores (N, C).
"""
from collections import OrderedDict

import numpy as np

__all__ = ["Workspace", "WorkspaceCache"]


class Workspace:
    """The buffers of one training step at batch size n (see the module docstring)."""

    def __init__(self, n, hidden_dims, num_classes, dtype, normalization, scratch):
        e = lambda *shape: np.empty(shape, dtype)  # noqa: E731
        self.n = n
        self.z = [e(n, d) for d in hidden_dims]
        self.r = [e(n, d) for d in hidden_dims]
        self.dh = [e(n, d) for d in hidden_dims]
        self.tmp = [e(n, d) for d in hidden_dims] if scratch else [None] * len(hidden_dims)
        stat = {"batchnorm": lambda d: d, "layernorm": lambda d: n}.get(normalization)
        self.mean = [e(stat(d)) if stat else None for d in hidden_dims]
        self.inv_std = [e(stat(d)) if stat else None for d in hidden_dims]
        self.scores = e(n, num_classes)
        self.dscores = e(n, num_classes)
        self.plans = {}            # train (bool) -> fastopt.nn.run_fused.Plan: the bound kernel calls

    def nbytes(self):
        arrays = [a for group in (self.z, self.r, self.dh, self.tmp, self.mean, self.inv_std)
                  for a in group if a is not None]
        return sum(a.nbytes for a in arrays) + self.scores.nbytes + self.dscores.nbytes


class WorkspaceCache:
    """The Workspaces of the most recently used batch sizes (at most KEEP of them)."""

    KEEP = 2

    def __init__(self, hidden_dims, num_classes, dtype, normalization, scratch=None):
        scratch = normalization == "layernorm" if scratch is None else bool(scratch)
        self._spec = (tuple(hidden_dims), num_classes, np.dtype(dtype), normalization, scratch)
        self._cache = OrderedDict()

    def get(self, n):
        ws = self._cache.get(n)
        if ws is None:
            ws = self._cache[n] = Workspace(n, *self._spec)
            while len(self._cache) > self.KEEP:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(n)
        return ws

    def sizes(self):
        """Batch sizes held, least recently used first."""
        return list(self._cache)

    def clear(self):
        self._cache.clear()
