"""Data augmentation for image batches: translation, crop after padding, flip, Gaussian noise, mixup.

    aug = Augment("shift:1,noise:0.05", image_shape="digits", seed=0)
    batch = aug(X, y, step)            # AugmentedBatch(X, y, y_partner, lam)

The spec is one comma-separated string (the CLI's ``--augment``):
  shift:K    translate by (dy, dx), each uniform in [-K, K], zero padding
  crop:P     pad by P and crop back to the image size at a uniform offset; the same map as a shift in
             [-P, P], so a crop's offset adds to the shift's
  flip       mirror left-right with probability 1/2 (off unless asked for: digits are not symmetric)
  noise:S    add S * N(0, 1) to every pixel
  mixup:A    mix each example with a partner of the batch: lam * x + (1 - lam) * x_partner,
             lam ~ Beta(A, A) per example; the labels come back as (y, y_partner, lam)

Where the randomness comes from: every per-example draw (shifts, flip, each pixel's noise) is a
counter-based hash (SplitMix64's finalizer) of (seed, step, example index, slot), so an example's
augmentation does not depend on the thread count, on the batch it is in, nor on its position there
(pass ``indices=`` the examples' dataset indices to key them by identity). Mixup pairs examples of
one batch, so its pairing and lam are drawn per batch, from a Philox generator keyed by
(seed, step). A ``np.random.Generator`` given instead of a step supplies the batch's key (one draw).
The pixel pass (flip, translate, mix, draw and add the noise) is one compiled kernel over the batch
(src/_augment_kernels.pyx; NumPy twin fastopt/reference/augment.py); each pixel's normal comes from
its example's key by the same hash, Box-Muller with polynomial log/sin/cos (bitwise the same in the
twin). Measured on the loaded 2-core machine, a CIFAR batch of 256 (786k pixels, float32): shift+flip
~2 ms (the twin ~25-30 ms); with noise ~23-30 ms, the draw dominating (NumPy's own standard_normal of
that size took 8-16 ms there).
"""
import numbers
from typing import NamedTuple

import numpy as np

from . import _backend
from ._validation import _describe, check_scalar
from .reference.augment import GOLDEN, NOISE_SLOT0, mix64

__all__ = ["Augment", "AugmentedBatch", "parse_spec", "mixup_softmax_loss", "augmented_copies", "IMAGE_SHAPES"]

# Image shapes by dataset name: flattened rows of these datasets are (C, H, W) images in C order.
IMAGE_SHAPES = {"digits": (1, 8, 8), "cifar10": (3, 32, 32), "cifar": (3, 32, 32)}

# name -> (kind, default, bounds); "flag" takes no value. One declaration for parser and defaults.
_OPTIONS = {
    "shift": ("int", 0), "crop": ("int", 0), "flip": ("flag", False),
    "noise": ("float", 0.0), "mixup": ("float", 0.0),
}

# Parameter slots of each example's stream; the noise uses slots NOISE_SLOT0 + k // 2 (in the kernel).
_SLOT_SHIFT_Y, _SLOT_SHIFT_X, _SLOT_FLIP, _SLOT_CROP_Y, _SLOT_CROP_X = range(1, 6)


def parse_spec(spec):
    """{option: value} of a spec string such as "shift:1,noise:0.05,flip" (every option present)."""
    if not isinstance(spec, str):
        raise TypeError(f"augment spec must be a str such as 'shift:1,noise:0.05', got {_describe(spec)}")
    options = {name: default for name, (_, default) in _OPTIONS.items()}
    seen = set()
    text = spec.strip()
    if text.lower() in ("", "none"):
        return options
    for item in text.split(","):
        name, sep, value = item.strip().partition(":")
        name = name.strip().lower()
        if name not in _OPTIONS:
            raise ValueError(f"augment spec {spec!r}: unknown option {name!r}; options are "
                             f"{', '.join(_OPTIONS)} (e.g. 'shift:1,noise:0.05')")
        if name in seen:
            raise ValueError(f"augment spec {spec!r}: option {name!r} given twice")
        seen.add(name)
        kind = _OPTIONS[name][0]
        if kind == "flag":
            if sep:
                raise ValueError(f"augment spec {spec!r}: {name!r} takes no value, got {item.strip()!r}")
            options[name] = True
            continue
        if not sep or not value.strip():
            raise ValueError(f"augment spec {spec!r}: {name!r} needs a value, as in '{name}:1'")
        try:
            number = int(value) if kind == "int" else float(value)
        except ValueError:
            raise ValueError(f"augment spec {spec!r}: {name!r} must be {'an int' if kind == 'int' else 'a number'}, "
                             f"got {value.strip()!r}") from None
        if not np.isfinite(number) or number < 0:
            raise ValueError(f"augment spec {spec!r}: {name!r} must be finite and >= 0, got {value.strip()!r}")
        options[name] = number
    return options


class AugmentedBatch(NamedTuple):
    """An augmented batch: inputs, labels, the mixup partners' labels and each example's lam.

    Without mixup y_partner is y and lam is 1. The loss is lam * L(y) + (1 - lam) * L(y_partner),
    i.e. cross-entropy against soft_labels() (see mixup_softmax_loss)."""
    X: np.ndarray
    y: np.ndarray
    y_partner: np.ndarray
    lam: np.ndarray

    def soft_labels(self, num_classes):
        """(N, num_classes) targets: lam at y, 1 - lam at y_partner (summed when they coincide)."""
        n = self.y.shape[0]
        t = np.zeros((n, num_classes), dtype=np.float64)
        np.add.at(t, (np.arange(n), self.y), self.lam)
        np.add.at(t, (np.arange(n), self.y_partner), 1.0 - self.lam)
        return t


def _hash(keys, slots):
    """(N, S) uint64 draws: example key x slot (both uint64 arrays), the kernel's counter-based stream."""
    return mix64(keys[:, None] + (slots[None, :] + np.uint64(1)) * GOLDEN)


def _unit(bits):
    """Uniform doubles in [0, 1) from the top 53 bits."""
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _check_image_shape(image_shape):
    if isinstance(image_shape, str):
        if image_shape.lower() not in IMAGE_SHAPES:
            raise ValueError(f"image_shape must be (C, H, W) or one of {sorted(IMAGE_SHAPES)}, got {image_shape!r}")
        return IMAGE_SHAPES[image_shape.lower()]
    if image_shape is None:
        return None
    if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}")
    return tuple(check_scalar(f"image_shape[{i}]", v, low=1, integer=True) for i, v in enumerate(image_shape))


class Augment:
    """A parsed augmentation spec (module docstring); ``aug(X, y, step)`` returns an AugmentedBatch.

    image_shape: (C, H, W), "digits" or "cifar10": how to read flattened rows (N, C*H*W); not needed
    for (N, C, H, W) input. seed: int >= 0, the stream's key together with each call's step.
    """

    def __init__(self, spec="", *, image_shape=None, seed=0):
        self.options = parse_spec(spec)
        self.image_shape = _check_image_shape(image_shape)
        self.seed = check_scalar("seed", seed, low=0, integer=True)

    @property
    def spec(self):
        """The canonical spec string (parse_spec(aug.spec) == aug.options)."""
        items = []
        for name, (kind, default) in _OPTIONS.items():
            value = self.options[name]
            if value != default:
                items.append(name if kind == "flag" else f"{name}:{value}")
        return ",".join(items) or "none"

    def __repr__(self):
        return f"Augment({self.spec!r}, image_shape={self.image_shape}, seed={self.seed})"

    @property
    def identity(self):
        return self.spec == "none"

    # ------------------------------------------------------------------ validation at the boundary
    def _geometry(self, X):
        if X.ndim == 4:
            shape = X.shape[1:]
            if self.image_shape is not None and tuple(self.image_shape) != shape:
                raise ValueError(f"X has images of shape {shape}, but image_shape is {self.image_shape}")
            return shape
        if X.ndim == 2:
            if self.image_shape is None:
                raise ValueError(f"X of shape {X.shape} is flattened: give Augment(image_shape=(C, H, W) "
                                 f"or one of {sorted(IMAGE_SHAPES)})")
            if int(np.prod(self.image_shape)) != X.shape[1]:
                raise ValueError(f"X must have C*H*W = {int(np.prod(self.image_shape))} features for "
                                 f"image_shape {self.image_shape}, got shape {X.shape}")
            return self.image_shape
        raise ValueError(f"X must have shape (N, C, H, W) or (N, C*H*W), got {X.shape}")

    def _key(self, rng_or_step):
        if isinstance(rng_or_step, np.random.Generator):
            return np.uint64(rng_or_step.integers(0, 2**64, dtype=np.uint64)), rng_or_step
        if isinstance(rng_or_step, (bool, np.bool_)) or not isinstance(rng_or_step, numbers.Integral) \
                or rng_or_step < 0:
            raise TypeError(f"rng_or_step must be an int >= 0 (the step) or a numpy.random.Generator, "
                            f"got {_describe(rng_or_step)}")
        ss = np.random.SeedSequence([self.seed, int(rng_or_step)])
        key = ss.generate_state(1, np.uint64)[0]
        return key, np.random.Generator(np.random.Philox(ss.spawn(1)[0]))

    @staticmethod
    def _check_xy(X, y, indices):
        if not isinstance(X, np.ndarray):
            raise TypeError(f"X must be a NumPy array, got {type(X).__name__}")
        if X.dtype not in (np.float32, np.float64):
            raise TypeError(f"X must be float32 or float64, got {X.dtype}")
        if X.shape[0] < 1:
            raise ValueError(f"X must hold at least one example, got shape {X.shape}")
        n = X.shape[0]
        if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.shape != (n,):
            raise ValueError(f"y must be an integer array of shape ({n},), got {_describe(y)}")
        if indices is None:
            return np.arange(n, dtype=np.uint64)
        if not isinstance(indices, np.ndarray) or indices.dtype.kind not in "iu" or indices.shape != (n,):
            raise ValueError(f"indices must be an integer array of shape ({n},), got {_describe(indices)}")
        if indices.size and indices.min() < 0:
            raise ValueError("indices must be >= 0")
        return indices.astype(np.uint64)

    # ------------------------------------------------------------------ the draws and the pass
    def draw(self, n, rng_or_step, indices):
        """The per-example parameters: dict of dy, dx, flip, partner, lam, noise_keys (int64 bits of
        each example's key; the kernel draws pixel k's normal from it)."""
        o = self.options
        key, batch_rng = self._key(rng_or_step)
        keys = mix64(np.uint64(key) ^ mix64((indices + np.uint64(1)) * GOLDEN))
        slots = np.arange(1, 6, dtype=np.uint64)
        u = _unit(_hash(keys, slots))                     # (n, 5): one uniform per slot

        def offset(k, col):
            return np.floor(u[:, col - 1] * (2 * k + 1)).astype(np.int64) - k

        dy = offset(o["shift"], _SLOT_SHIFT_Y) + offset(o["crop"], _SLOT_CROP_Y)
        dx = offset(o["shift"], _SLOT_SHIFT_X) + offset(o["crop"], _SLOT_CROP_X)
        flip = (u[:, _SLOT_FLIP - 1] < 0.5).astype(np.uint8) if o["flip"] else np.zeros(n, np.uint8)
        if o["mixup"] > 0:
            lam = batch_rng.beta(o["mixup"], o["mixup"], n)
            partner = batch_rng.permutation(n).astype(np.int64)
        else:
            lam, partner = np.ones(n), np.arange(n, dtype=np.int64)
        return dict(dy=dy, dx=dx, flip=flip, partner=partner, lam=lam, noise_keys=keys.view(np.int64))

    def __call__(self, X, y, rng_or_step, *, indices=None):
        """Augment a batch: returns AugmentedBatch(X', y, y_partner, lam), X' a new array shaped like X."""
        index = self._check_xy(X, y, indices)
        c, h, w = self._geometry(X)
        n, d = X.shape[0], c * h * w
        p = self.draw(n, rng_or_step, index)
        flat = np.ascontiguousarray(X).reshape(n, d)    # an input: a copy is harmless
        dt = X.dtype.type
        out = np.empty((n, d), X.dtype)
        k = _backend.kernels("augment")
        k.augment_batch(flat, c, h, w, p["dy"], p["dx"], p["flip"], p["partner"], p["lam"].astype(dt),
                        p["noise_keys"], float(self.options["noise"]), out,
                        n_threads=_backend.threads_for(n * d, k.GRAIN))
        return AugmentedBatch(out.reshape(X.shape), y, y[p["partner"]], p["lam"].astype(dt))


def mixup_softmax_loss(scores, y, y_partner, lam):
    """Softmax cross-entropy against mixup's soft targets: mean of lam*L(y) + (1-lam)*L(y_partner).

    Returns (loss, dscores); dscores = (softmax(scores) - target) / N. scores (N, C) float.
    """
    if not isinstance(scores, np.ndarray) or scores.ndim != 2 or scores.dtype.kind != "f":
        raise ValueError(f"scores must be a float array of shape (N, C), got {_describe(scores)}")
    n, num_classes = scores.shape
    for name, a in (("y", y), ("y_partner", y_partner)):
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "iu" or a.shape != (n,):
            raise ValueError(f"{name} must be an integer array of shape ({n},), got {_describe(a)}")
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} must hold labels in [0, {num_classes})")
    lam = np.asarray(lam, dtype=np.float64)
    if lam.shape != (n,) or not np.all((lam >= 0) & (lam <= 1)):
        raise ValueError(f"lam must have shape ({n},) with values in [0, 1], got shape {lam.shape}")
    target = AugmentedBatch(None, y, y_partner, lam).soft_labels(num_classes)
    shifted = scores.astype(np.float64) - scores.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -float((target * log_p).sum()) / n
    dscores = (np.exp(log_p) - target) / n
    return loss, dscores.astype(scores.dtype)


def augmented_copies(aug, X, y, copies):
    """Offline augmentation: (X', y') holding X, y followed by `copies` augmented versions of every
    example (copy c drawn with step c, keyed by example index), for a fixed enlarged training set.
    aug: an Augment without mixup (its labels are soft); copies: int >= 0. X, y are not changed."""
    if not isinstance(aug, Augment):
        raise TypeError(f"aug must be an Augment, got {_describe(aug)}")
    if aug.options["mixup"] > 0:
        raise ValueError("augmented_copies needs an Augment without mixup (mixup's labels are soft)")
    copies = check_scalar("copies", copies, low=0, integer=True)
    batches = [aug(X, y, c + 1) for c in range(copies)]     # validates X, y (all before returning)
    return (np.concatenate([X] + [b.X for b in batches]), np.concatenate([y] * (copies + 1)))
