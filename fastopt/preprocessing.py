"""Preprocessing fitted on the training split only (CS231n lecture 5 / notes "Data Preprocessing").

    pre = from_spec("zca").fit(X_train)
    X_train, X_val = pre.transform(X_train), pre.transform(X_val)   # val uses train's statistics

Center (the mean image, or per-channel means), Standardize (per feature; a constant feature keeps
scale 1), PCA(k) (project onto the k leading eigenvectors of the covariance), PCAWhiten(k, eps)
(the projections divided by sqrt(eigenvalue + eps)) and ZCA(eps) (whitening rotated back into the
input space: the whitened data closest to the input). The covariance is X_c^T X_c / N in float64, as
in CS231n's notes; transform returns the input's dtype.

State is plain arrays and numbers (``state_dict()``; ``from_state_dict`` validates kind, keys, shapes,
dtypes, finiteness and k <= features before building anything), so it can be stored in a model file.
"""
import numpy as np

from ._validation import _describe, check_scalar

__all__ = ["Center", "Standardize", "PCA", "PCAWhiten", "ZCA", "from_spec", "from_state_dict"]


def _check_X(name, X, features=None):
    """X as a float64 (N, D) view/copy, N >= 1 (features: the D a fitted transform expects)."""
    if not isinstance(X, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(X).__name__}")
    if X.dtype.kind != "f":
        raise TypeError(f"{name} must have a float dtype, got {X.dtype}")
    if X.ndim < 2 or X.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, d1, ...) with N >= 1, got {X.shape}")
    flat = X.reshape(X.shape[0], -1)
    if features is not None and flat.shape[1] != features:
        raise ValueError(f"{name} must have {features} features per example (as fitted), got shape {X.shape}")
    if not np.all(np.isfinite(flat)):
        raise ValueError(f"{name} must be finite")
    return flat.astype(np.float64)


class _Preprocessor:
    """fit / transform / inverse_transform over (N, D) arrays; state in plain arrays (``_state``)."""
    kind = None
    _arrays = ()        # state entries that are float64 arrays (validated in from_state_dict)

    def __init__(self):
        self._state = None

    @property
    def fitted(self):
        return self._state is not None

    def _need_fit(self):
        if self._state is None:
            raise ValueError(f"{type(self).__name__} is not fitted: call fit(X_train) first")
        return self._state

    @property
    def features(self):
        return self._need_fit()["mean"].shape[0]

    def fit(self, X):
        """Fit on the training split X (N, ...); returns self. All or nothing: a refused X keeps the state."""
        flat = _check_X("X", X)
        self._check_fit(flat)
        mean = flat.mean(axis=0)
        self._state = self._fit(flat, mean)
        return self

    def _check_fit(self, flat):
        pass

    def transform(self, X):
        state = self._need_fit()
        flat = _check_X("X", X, state["mean"].shape[0])
        out = self._forward(flat - state["mean"], state)
        shape = X.shape if out.shape[1] == flat.shape[1] else out.shape
        return out.astype(X.dtype).reshape(shape)

    def fit_transform(self, X):
        return self.fit(X).transform(X)

    def inverse_transform(self, Z):
        state = self._need_fit()
        flat = _check_X("Z", Z, self.output_features)
        return (self._backward(flat, state) + state["mean"]).astype(Z.dtype)

    @property
    def output_features(self):
        return self.features

    def state_dict(self):
        state = self._need_fit()
        return {"kind": self.kind, **self._settings(),
                **{k: v.copy() if isinstance(v, np.ndarray) else v for k, v in state.items()}}

    def _settings(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._settings().items())
        return f"{type(self).__name__}({args}){'' if self.fitted else ' (not fitted)'}"


class Center(_Preprocessor):
    """Subtract the training mean image, or (per_channel=True, image_shape=(C, H, W)) each channel's mean."""
    kind = "center"
    _arrays = ("mean",)

    def __init__(self, per_channel=False, image_shape=None):
        super().__init__()
        self.per_channel = bool(per_channel)
        self.image_shape = None
        if per_channel:
            if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3:
                raise ValueError(f"per-channel centering needs image_shape=(C, H, W), got {image_shape!r}")
            self.image_shape = tuple(check_scalar(f"image_shape[{i}]", v, low=1, integer=True)
                                     for i, v in enumerate(image_shape))

    def _settings(self):
        return {"per_channel": self.per_channel, "image_shape": self.image_shape}

    def _check_fit(self, flat):
        if self.per_channel and flat.shape[1] != int(np.prod(self.image_shape)):
            raise ValueError(f"X must have C*H*W = {int(np.prod(self.image_shape))} features for "
                             f"image_shape {self.image_shape}, got {flat.shape[1]}")

    def _fit(self, flat, mean):
        if self.per_channel:
            c = self.image_shape[0]
            mean = np.repeat(flat.reshape(flat.shape[0], c, -1).mean(axis=(0, 2)), flat.shape[1] // c)
        return {"mean": mean}

    def _forward(self, centered, state):
        return centered

    def _backward(self, Z, state):
        return Z


class Standardize(_Preprocessor):
    """(x - mean) / std per feature, fitted on the training split; a constant feature keeps scale 1."""
    kind = "standardize"
    _arrays = ("mean", "scale")

    def _fit(self, flat, mean):
        std = flat.std(axis=0)
        return {"mean": mean, "scale": np.where(std > 0, std, 1.0)}

    def _forward(self, centered, state):
        return centered / state["scale"]

    def _backward(self, Z, state):
        return Z * state["scale"]


def _eig(flat, mean):
    """Eigenvalues (descending) and eigenvectors (columns) of the covariance X_c^T X_c / N."""
    centered = flat - mean
    values, vectors = np.linalg.eigh(centered.T @ centered / flat.shape[0])
    order = np.argsort(values)[::-1]
    values = values[order]
    # Eigenvalues within rounding of zero are zero (matrix_rank's tolerance): a rank-deficient
    # covariance comes out of eigh as +-1e-17-ish values whose sign depends on the BLAS kernels of
    # the CPU (a zero-variance direction passed the eps=0 whitening check on one machine, not another).
    tol = values[0] * values.size * np.finfo(values.dtype).eps if values.size else 0.0
    values[values <= tol] = 0.0
    return values, np.ascontiguousarray(vectors[:, order])


class _Projection(_Preprocessor):
    """PCA-family state: mean (D,), components (D, k) columns, variances (k,) eigenvalues."""
    _arrays = ("mean", "components", "variances")
    whiten = False

    def __init__(self, k=None, eps=0.0):
        super().__init__()
        self.k = None if k is None else check_scalar("k", k, low=1, integer=True)
        self.eps = check_scalar("eps", eps, low=0)

    def _settings(self):
        return {"k": self.k, "eps": self.eps}

    def _check_fit(self, flat):
        if self.k is not None and self.k > flat.shape[1]:
            raise ValueError(f"{type(self).__name__}: k = {self.k} is larger than the number of features "
                             f"({flat.shape[1]}); k must be <= {flat.shape[1]}")

    def _fit(self, flat, mean):
        values, vectors = _eig(flat, mean)
        k = flat.shape[1] if self.k is None else self.k
        if self.whiten and self.eps == 0 and values[k - 1] <= 0:
            raise ValueError(f"{type(self).__name__} with eps=0 needs a covariance of rank >= {k}; the training "
                             f"data has a zero variance direction: give eps > 0 or a smaller k")
        return {"mean": mean, "components": vectors[:, :k], "variances": values[:k]}

    @property
    def output_features(self):
        return self._need_fit()["components"].shape[1]

    def component_images(self, image_shape):
        """The principal directions as images, (k, C, H, W), leading first (for plotting)."""
        comp = self._need_fit()["components"]
        shape = tuple(image_shape)
        if len(shape) != 3 or int(np.prod(shape)) != comp.shape[0]:
            raise ValueError(f"image_shape must be (C, H, W) with C*H*W = {comp.shape[0]}, got {image_shape!r}")
        return comp.T.reshape((comp.shape[1],) + shape).copy()

    def _scale(self, state):
        return np.sqrt(state["variances"] + self.eps) if self.whiten else 1.0

    def _forward(self, centered, state):
        return (centered @ state["components"]) / self._scale(state)

    def _backward(self, Z, state):
        return (Z * self._scale(state)) @ state["components"].T


class PCA(_Projection):
    """Project onto the k leading principal components: (N, D) -> (N, k)."""
    kind = "pca"

    def __init__(self, k):
        super().__init__(k)

    def _settings(self):
        return {"k": self.k}


class PCAWhiten(_Projection):
    """PCA to k dimensions (all when k is None), each divided by sqrt(eigenvalue + eps)."""
    kind = "whiten"
    whiten = True

    def __init__(self, k=None, eps=1e-5):
        super().__init__(k, eps)


class ZCA(_Projection):
    """Whitening rotated back into the input space: x_c @ U diag(1/sqrt(S + eps)) U^T (symmetric)."""
    kind = "zca"
    whiten = True

    def __init__(self, eps=1e-5):
        super().__init__(None, eps)

    def _settings(self):
        return {"eps": self.eps}

    @property
    def output_features(self):
        return self.features

    @property
    def matrix(self):
        """The symmetric whitening matrix W (D, D): transform(X) = (X - mean) @ W."""
        state = self._need_fit()
        u = state["components"]
        return (u / self._scale(state)) @ u.T

    def _forward(self, centered, state):
        return super()._forward(centered, state) @ state["components"].T

    def _backward(self, Z, state):
        return super()._backward(Z @ state["components"], state)


_KINDS = {cls.kind: cls for cls in (Center, Standardize, PCA, PCAWhiten, ZCA)}


def from_spec(spec, *, image_shape=None):
    """"center" | "center:channel" | "standardize" | "pca:K" | "whiten" | "whiten:K" | "zca" -> unfitted."""
    if not isinstance(spec, str):
        raise TypeError(f"preprocess spec must be a str, got {_describe(spec)}")
    name, sep, arg = spec.strip().lower().partition(":")
    usage = "one of center, center:channel, standardize, pca:K, whiten, whiten:K, zca"
    if name not in _KINDS:
        raise ValueError(f"preprocess spec must be {usage}, got {spec!r}")
    if name == "center":
        if sep and arg != "channel":
            raise ValueError(f"preprocess spec must be {usage}, got {spec!r}")
        return Center(per_channel=bool(sep), image_shape=image_shape)
    if name in ("pca", "whiten") and sep:
        try:
            k = int(arg)
        except ValueError:
            raise ValueError(f"preprocess spec {spec!r}: K must be an int >= 1, got {arg!r}") from None
        return PCA(k) if name == "pca" else PCAWhiten(k)
    if name == "pca":
        raise ValueError("preprocess spec 'pca' needs the number of components, as in 'pca:32'")
    if sep:
        raise ValueError(f"preprocess spec {spec!r}: {name!r} takes no argument")
    return _KINDS[name]()


def from_state_dict(state):
    """Rebuild a fitted preprocessor from state_dict(); ValueError for anything inconsistent."""
    if not isinstance(state, dict) or state.get("kind") not in _KINDS:
        got = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"preprocessing state must be a dict with 'kind' in {sorted(_KINDS)}, got {got!r}")
    cls = _KINDS[state["kind"]]
    settings = {k: v for k, v in state.items() if k != "kind" and k not in cls._arrays}
    try:
        obj = cls(**settings)
    except TypeError as exc:
        raise ValueError(f"preprocessing state of kind {state['kind']!r} has wrong settings "
                         f"{sorted(settings)}: {exc}") from None
    arrays = {}
    for name in cls._arrays:
        a = state.get(name)
        if not isinstance(a, np.ndarray) or a.dtype != np.float64 or not np.all(np.isfinite(a)):
            raise ValueError(f"preprocessing state[{name!r}] must be a finite float64 array, got {_describe(a)}")
        arrays[name] = a.copy()
    d = arrays["mean"].shape
    if len(d) != 1 or d[0] < 1:
        raise ValueError(f"preprocessing state['mean'] must have shape (D,), got {d}")
    d = d[0]
    if "scale" in arrays and (arrays["scale"].shape != (d,) or np.any(arrays["scale"] <= 0)):
        raise ValueError(f"preprocessing state['scale'] must be ({d},) and positive")
    if "components" in arrays:
        comp, var = arrays["components"], arrays["variances"]
        k = comp.shape[1] if comp.ndim == 2 else -1
        if comp.ndim != 2 or comp.shape[0] != d or not 1 <= k <= d:
            raise ValueError(f"preprocessing state['components'] must have shape ({d}, k) with "
                             f"1 <= k <= {d}, got {comp.shape}")
        if var.shape != (k,) or np.any(var < 0):
            raise ValueError(f"preprocessing state['variances'] must be ({k},) and >= 0, got {var.shape}")
        want_k = d if obj.k is None else obj.k
        if k != want_k:
            raise ValueError(f"preprocessing state: k = {obj.k} but components hold {k} columns")
    if isinstance(obj, Center) and obj.per_channel and d != int(np.prod(obj.image_shape)):
        raise ValueError(f"preprocessing state['mean'] has {d} features, image_shape {obj.image_shape}")
    obj._state = arrays
    return obj
