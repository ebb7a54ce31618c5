"""The CS231n assignment-2 way of training a batchnorm MLP, in pure NumPy: the bench's baseline.

Layer functions returning (out, cache) with temporaries everywhere (affine, batchnorm in train mode,
ReLU, softmax loss and their backwards), a dict of per-parameter gradients, and the assignment's
``adam(w, dw, config)`` rule applied parameter by parameter, the minibatch drawn as its Solver draws
it (``choice(N, batch)`` and fancy indexing). Nothing of fastopt runs here.
"""
import numpy as np

BN_EPS, BN_MOMENTUM = 1e-5, 0.9


def affine_forward(x, w, b):
    return x.reshape(x.shape[0], -1).dot(w) + b, (x, w)


def affine_backward(dout, cache):
    x, w = cache
    return dout.dot(w.T).reshape(x.shape), x.reshape(x.shape[0], -1).T.dot(dout), dout.sum(axis=0)


def batchnorm_forward(x, gamma, beta, bn):
    mu, var = x.mean(axis=0), x.var(axis=0)
    xhat = (x - mu) / np.sqrt(var + BN_EPS)
    bn["running_mean"] = BN_MOMENTUM * bn["running_mean"] + (1 - BN_MOMENTUM) * mu
    bn["running_var"] = BN_MOMENTUM * bn["running_var"] + (1 - BN_MOMENTUM) * var
    return gamma * xhat + beta, (xhat, gamma, var)


def batchnorm_backward(dout, cache):
    xhat, gamma, var = cache
    n = dout.shape[0]
    dbeta, dgamma = dout.sum(axis=0), (dout * xhat).sum(axis=0)
    return gamma / np.sqrt(var + BN_EPS) / n * (n * dout - dbeta - xhat * dgamma), dgamma, dbeta


def softmax_loss(x, y):
    shifted = x - x.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = x.shape[0]
    dx = np.exp(log_probs)
    dx[np.arange(n), y] -= 1
    return -log_probs[np.arange(n), y].mean(), dx / n


def adam(w, dw, config):
    """CS231n's adam(w, dw, config) -> (next_w, config)."""
    config.setdefault("learning_rate", 1e-3)
    config.setdefault("beta1", 0.9)
    config.setdefault("beta2", 0.999)
    config.setdefault("epsilon", 1e-8)
    config.setdefault("m", np.zeros_like(w))
    config.setdefault("v", np.zeros_like(w))
    config.setdefault("t", 0)
    config["t"] += 1
    config["m"] = config["beta1"] * config["m"] + (1 - config["beta1"]) * dw
    config["v"] = config["beta2"] * config["v"] + (1 - config["beta2"]) * dw ** 2
    mt = config["m"] / (1 - config["beta1"] ** config["t"])
    vt = config["v"] / (1 - config["beta2"] ** config["t"])
    return w - config["learning_rate"] * mt / (np.sqrt(vt) + config["epsilon"]), config


class Cs231nMLP:
    """{affine - batchnorm - relu} x (L - 1) - affine - softmax, trained by CS231n's Solver loop body."""

    def __init__(self, data, dims, batch_size, lr=1e-3, seed=0, dtype=np.float32):
        rng = np.random.default_rng(seed)
        self.X, self.y = data["X_train"].astype(dtype), data["y_train"]
        self.batch_size, self.L = batch_size, len(dims) - 1
        self.params = {}
        for i in range(1, self.L + 1):
            self.params[f"W{i}"] = (rng.standard_normal((dims[i - 1], dims[i])) *
                                    np.sqrt(2.0 / dims[i - 1])).astype(dtype)
            self.params[f"b{i}"] = np.zeros(dims[i], dtype)
            if i < self.L:
                self.params[f"gamma{i}"] = np.ones(dims[i], dtype)
                self.params[f"beta{i}"] = np.zeros(dims[i], dtype)
        self.bn = [{"running_mean": np.zeros(d, dtype), "running_var": np.zeros(d, dtype)} for d in dims[1:-1]]
        self.configs = {k: {"learning_rate": lr} for k in self.params}
        self.rng = np.random.RandomState(seed)

    def loss(self, X, y):
        p, caches, h = self.params, [], X
        for i in range(1, self.L):
            a, fc = affine_forward(h, p[f"W{i}"], p[f"b{i}"])
            a, bn = batchnorm_forward(a, p[f"gamma{i}"], p[f"beta{i}"], self.bn[i - 1])
            h = np.maximum(0, a)
            caches.append((fc, bn, a))
        scores, fc_out = affine_forward(h, p[f"W{self.L}"], p[f"b{self.L}"])
        loss, dscores = softmax_loss(scores, y)
        grads = {}
        dh, grads[f"W{self.L}"], grads[f"b{self.L}"] = affine_backward(dscores, fc_out)
        for i in range(self.L - 1, 0, -1):
            fc, bn, a = caches[i - 1]
            da, grads[f"gamma{i}"], grads[f"beta{i}"] = batchnorm_backward(dh * (a > 0), bn)
            dh, grads[f"W{i}"], grads[f"b{i}"] = affine_backward(da, fc)
        return loss, grads

    def step(self):
        mask = self.rng.choice(self.X.shape[0], self.batch_size)
        loss, grads = self.loss(self.X[mask], self.y[mask])
        for k, w in self.params.items():
            self.params[k], self.configs[k] = adam(w, grads[k], self.configs[k])
        return loss
