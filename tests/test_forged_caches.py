"""Backward functions refuse a cache their forward did not make (TypeError/ValueError naming the cache
field), before any kernel sees it: fastopt.layers.normalization's NormCache fields, the activation
caches and core's affine/relu caches. The random version is tests/test_fuzz_public_api.py."""
import numpy as np
import pytest

from fastopt import layers
from fastopt.layers.normalization import NormCache

rng = np.random.default_rng(0)
NORMS = {   # kind: (forward arguments, x shape)
    "batchnorm": lambda x: (x, np.ones(6), np.zeros(6), {"mode": "train"}),
    "layernorm": lambda x: (x, np.ones(6), np.zeros(6), {}),
    "spatial_batchnorm": lambda x: (x, np.ones(6), np.zeros(6), {"mode": "train"}),
    "spatial_groupnorm": lambda x: (x, np.ones(6), np.zeros(6), 3, {}),
}
SHAPES = {"batchnorm": (5, 6), "layernorm": (5, 6), "spatial_batchnorm": (5, 6, 2, 3),
          "spatial_groupnorm": (5, 6, 2, 3)}


def _forged_fields(cache):
    """(field, forged value) pairs: wrong type, dtype, shape, layout, for every NormCache field."""
    x = cache.x
    return [("x", None), ("x", x.tolist()), ("x", x.astype(np.float32)), ("x", x[:, :-1]),
            ("x", np.asfortranarray(x)), ("x", x.astype(complex)), ("x", x[:0]),
            ("gamma", None), ("gamma", np.ones(7)), ("gamma", np.ones((1, 6))), ("gamma", np.ones(6, np.float32)),
            ("mean", np.ones(1)), ("mean", cache.mean[::2]), ("mean", "0"), ("mean", cache.mean.astype(int)),
            ("inv_std", np.ones(cache.inv_std.size + 1)), ("inv_std", [1.0]),
            ("groups", 0 if cache.groups else 2), ("groups", "3"), ("groups", 4 if cache.groups else None),
            ("param_shape", (7,)), ("param_shape", None), ("param_shape", [6]), ("mode", "test"),
            ("kind", "other")]


@pytest.mark.parametrize("kind", sorted(NORMS))
def test_forged_norm_cache_fields_are_refused(kind):
    x = rng.standard_normal(SHAPES[kind])
    forward, backward = getattr(layers, f"{kind}_forward"), getattr(layers, f"{kind}_backward")
    _, cache = forward(*NORMS[kind](x))
    dout = rng.standard_normal(x.shape)
    want = backward(dout, cache)
    for field, value in _forged_fields(cache):
        if field == "groups" and value is None and cache.groups is None:
            continue                              # that is the real value
        forged = NormCache(**{f: getattr(cache, f) for f in NormCache.__slots__})
        setattr(forged, field, value)
        with pytest.raises((TypeError, ValueError), match=r"cache") as info:
            backward(dout, forged)
        # the message names the field (or the one it no longer agrees with: x forged, gamma refused)
        named = ["from other_forward"] if field == "kind" else [f"cache.{f}" for f in ("x", "gamma", field)]
        assert any(n in str(info.value) for n in named) or field == "mode", (field, value, info.value)
    for got, expected in zip(backward(dout, cache), want):   # the real cache still works
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", [a.name for a in layers.activations.ACTIVATIONS.values() if a.name != "relu"])
def test_forged_activation_caches_are_refused(name):
    spec = layers.activations.ACTIVATIONS[name]
    x = rng.standard_normal((3, 4))
    _, (cname, value, saved) = spec.forward(x)
    other = next(n for n in layers.activations.ACTIVATIONS if n != name)
    dout = np.ones((3, 4))
    for cache in [None, saved, (cname, value), (other, value, saved), (cname, value, saved.tolist()),
                  (cname, value, saved.astype(int)), (cname, value, saved.astype(complex)),
                  (cname, "0.1", saved), (cname, -1.0, saved), (cname, float("nan"), saved),
                  (cname, value, saved[:, :2]), [cname, value, saved]]:
        with pytest.raises((TypeError, ValueError), match=r"cache|dout"):
            spec.backward(dout, cache)
    np.testing.assert_array_equal(spec.backward(dout, (cname, value, saved)),
                                  spec.backward(dout, spec.forward(x)[1]))
