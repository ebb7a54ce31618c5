"""The sharded execution of a FullyConnectedNet description: layer by layer over a rank's shards.

fastopt.nn.run_layers runs the blocks (fastopt.nn.blocks) on one batch; this runs them on the shards
one rank owns of a GLOBAL batch, with the public layer functions of fastopt.layers, so that a shard's
result does not depend on which rank computes it or on how many ranks there are:

  batchnorm  (train) every shard's per-feature (sum, sum of squares) of the pre-normalization
             activations, in float64, is combined over all shards of all ranks (a RowCombine: in shard
             order in deterministic mode); every shard normalizes with the global mean and biased
             variance, var = sum_sq / N - mean^2 (float64; clipped at 0); the running averages are
             updated ONCE per step from the global statistics (``commit``, after the step succeeded).
             Backward: the global per-feature sums of dout and dout * xhat are combined the same way
             and dx = gamma * inv_std / N * (N dout - sum dout - xhat sum(dout xhat)), the formula of
             fastopt.reference.norm. So the result is full-batch batchnorm, not per-shard.
  dropout    the masks of shard s at step t come from one Generator seeded by
             SeedSequence([seed, t, s]), drawn layer after layer: they depend on neither the rank
             count nor the order in which ranks run.
  layernorm, activations, affine layers: per shard (nothing global).

Gradients are SUMS over the rows (the softmax gradient times the shard's row count), so a shard's
row adds up with the others' and the total divided by N is the mean gradient; the batchnorm backward
is linear in dout, so it takes sums as well.
"""
import numpy as np

from .. import layers
from ..layers.normalization import bn_settings, norm_eps

__all__ = ["ShardedNet", "needs_sharded_execution"]


def needs_sharded_execution(model):
    """Whether `model`'s training pass needs the whole batch (batchnorm) or per-shard seeds (dropout)."""
    return getattr(model, "normalization", None) == "batchnorm" or bool(getattr(model, "use_dropout", False))


def dropout_rng(seed, step, shard):
    """The Generator of shard `shard`'s dropout masks at step `step` (module docstring)."""
    return np.random.default_rng(np.random.SeedSequence([seed, step, shard]))


class ShardedNet:
    """The training pass of a fastopt FullyConnectedNet over one rank's shards of a global batch.

    model    : a fastopt.nn.FullyConnectedNet (its ``blocks``, ``params``, ``bn_params``, dtype)
    combiner : callable(width) -> a RowCombine of `width` float64 columns (one per batchnorm layer)
    """

    def __init__(self, model, combiner):
        blocks = getattr(model, "blocks", None)
        if not isinstance(blocks, list) or not blocks:
            raise TypeError(f"a batchnorm or dropout model needs fastopt's block description "
                            f"(FullyConnectedNet.blocks) to be trained data-parallel, got {type(model).__name__}")
        self.model = model
        self.dtype = np.dtype(model.dtype)
        *self.hidden, self.output = blocks
        self.keep = float(model.dropout_keep_ratio) if model.use_dropout else 1.0
        self._stats = {blk.index: combiner(2 * blk.width) for blk in self.hidden
                       if blk.norm is not None and blk.norm.name == "batchnorm"}
        self._pending = []

    @property
    def combiners(self):
        """The per-step collectives in the order a step calls them: forward, then backward."""
        forward = [self._stats[blk.index] for blk in self.hidden if blk.index in self._stats]
        return forward + forward[::-1]

    def check(self):
        """Validate the model's normalization settings; creates absent running statistics (zeros)."""
        for blk in self.hidden:
            if blk.norm is None:
                continue
            name, p = f"model.bn_params[{blk.index}]", self.model.bn_params[blk.index]
            if blk.index not in self._stats:
                norm_eps(name, p)
                continue
            bn_settings(name, p, blk.width)
        for blk in self.hidden:
            if blk.index in self._stats:
                p = self.model.bn_params[blk.index]
                for key in ("running_mean", "running_var"):
                    if p.get(key) is None:
                        p[key] = np.zeros(blk.width, self.dtype)

    def running(self):
        """The running statistics arrays [running_mean, running_var, ...] (batchnorm layers in order)."""
        return [self.model.bn_params[i][key] for i in sorted(self._stats) for key in ("running_mean", "running_var")]

    # ------------------------------------------------------------ one step
    def gradient_sums(self, X, y, bounds, mine, rows, slices, key, sync):
        """Write into rows[j] the gradient sums of shard mine[j] (columns `slices[name]`) and its loss
        sum (column -1). key = (seed, step) of the dropout masks; sync(combiner) -> the combined total.
        """
        p, dt = self.model.params, self.dtype
        xs = [np.ascontiguousarray(X[bounds[s]:bounds[s + 1]].reshape(bounds[s + 1] - bounds[s], -1), dtype=dt)
              for s in mine]
        ys = [y[bounds[s]:bounds[s + 1]] for s in mine]
        n = bounds[-1]
        rngs = [dropout_rng(key[0], key[1], s) for s in mine] if self.keep != 1 else None
        self._pending = []
        h, caches = xs, []
        for blk in self.hidden:
            h, cache = self._hidden_forward(blk, h, rngs, n, sync)
            caches.append(cache)
        k = self.output.k
        scores, out_caches = zip(*(layers.affine_forward(hs, p[f"W{k}"], p[f"b{k}"]) for hs in h))
        dh = []
        for j, (sc, ys_j) in enumerate(zip(scores, ys)):
            loss, dscores = layers.softmax_loss(sc, ys_j)
            rows[j, -1] = loss * len(ys_j)
            dscores *= dt.type(len(ys_j))          # the gradient of the shard's loss SUM
            dh.append(dscores)
        dh = self._affine_backward(self.output.k, dh, out_caches, rows, slices)
        for blk, cache in zip(reversed(self.hidden), reversed(caches)):
            dh = self._hidden_backward(blk, dh, cache, n, rows, slices, sync)

    def commit(self):
        """Update the running statistics from the step's global ones (once the step succeeded)."""
        for blk, mean, var in self._pending:
            p = self.model.bn_params[blk.index]
            m = float(p.get("momentum", 0.9))
            for key, stat in (("running_mean", mean), ("running_var", var)):
                r = p[key]
                r[...] = m * r.astype(np.float64) + (1.0 - m) * stat
        self._pending = []

    def _hidden_forward(self, blk, h, rngs, n, sync):
        p, k = self.model.params, blk.k
        a, fc = zip(*(layers.affine_forward(hs, p[f"W{k}"], p[f"b{k}"]) for hs in h))
        norm = None
        if blk.index in self._stats:
            a, norm = self._batchnorm_forward(blk, a, n, sync)
        elif blk.norm is not None:
            param = {"eps": norm_eps(f"model.bn_params[{blk.index}]", self.model.bn_params[blk.index])}
            a, norm = zip(*(blk.norm.forward(x, p[f"gamma{k}"], p[f"beta{k}"], param) for x in a))
        out, act = zip(*(blk.activation.forward(x) for x in a))
        drop = None
        if blk.dropout and rngs is not None:
            out, drop = zip(*(layers.dropout_forward(o, {"p": self.keep, "mode": "train", "rng": r})
                              for o, r in zip(out, rngs)))
        return out, (fc, norm, act, drop)

    def _hidden_backward(self, blk, dh, cache, n, rows, slices, sync):
        fc, norm, act, drop = cache
        k = blk.k
        if drop is not None:
            dh = [layers.dropout_backward(d, c) for d, c in zip(dh, drop)]
        da = [blk.activation.backward(d, c) for d, c in zip(dh, act)]
        if blk.index in self._stats:
            da = self._batchnorm_backward(blk, da, norm, n, rows, slices, sync)
        elif norm is not None:
            for j, (d, c) in enumerate(zip(da, norm)):
                da[j], dgamma, dbeta = blk.norm.backward(d, c)
                rows[j, slices[f"gamma{k}"]] = dgamma
                rows[j, slices[f"beta{k}"]] = dbeta
        return self._affine_backward(k, da, fc, rows, slices)

    @staticmethod
    def _affine_backward(k, dout, caches, rows, slices):
        dx = []
        for j, (d, c) in enumerate(zip(dout, caches)):
            dxj, dw, db = layers.affine_backward(d, c)
            rows[j, slices[f"W{k}"]] = dw.reshape(-1)
            rows[j, slices[f"b{k}"]] = db
            dx.append(dxj)
        return dx

    def _batchnorm_forward(self, blk, a, n, sync):
        """Normalize every shard with the global batch's statistics; returns (outs, caches)."""
        H, dt, p, k = blk.width, self.dtype, self.model.params, blk.k
        combiner = self._stats[blk.index]
        for j, x in enumerate(a):
            x64 = x.astype(np.float64)
            np.sum(x64, axis=0, out=combiner.rows[j, :H])
            np.multiply(x64, x64, out=x64)
            np.sum(x64, axis=0, out=combiner.rows[j, H:])
        total = sync(combiner)
        mean = total[:H] / n
        var = np.maximum(total[H:] / n - mean * mean, 0.0)
        eps = float(self.model.bn_params[blk.index].get("eps", 1e-5))
        inv_std = 1.0 / np.sqrt(var + eps)
        self._pending.append((blk, mean, var))
        mean_t, inv_t = mean.astype(dt), inv_std.astype(dt)
        gamma, beta = p[f"gamma{k}"], p[f"beta{k}"]
        xhats = [(x - mean_t) * inv_t for x in a]
        outs = [gamma * xh + beta for xh in xhats]
        return outs, (xhats, inv_std)

    def _batchnorm_backward(self, blk, dout, cache, n, rows, slices, sync):
        """dx of every shard from the global sums of dout and dout * xhat; the shard's own sums are
        its dbeta, dgamma contributions."""
        H, dt, k = blk.width, self.dtype, blk.k
        xhats, inv_std = cache
        combiner = self._stats[blk.index]
        for j, (d, xh) in enumerate(zip(dout, xhats)):
            np.sum(d, axis=0, dtype=np.float64, out=combiner.rows[j, :H])
            np.sum(d * xh, axis=0, dtype=np.float64, out=combiner.rows[j, H:])
            rows[j, slices[f"beta{k}"]] = combiner.rows[j, :H]
            rows[j, slices[f"gamma{k}"]] = combiner.rows[j, H:]
        total = sync(combiner)
        scale = self.model.params[f"gamma{k}"].astype(np.float64) * inv_std
        k0 = scale.astype(dt)
        kb = (scale * total[:H] / n).astype(dt)
        kg = (scale * total[H:] / n).astype(dt)
        return [k0 * d - kb - kg * xh for d, xh in zip(dout, xhats)]
