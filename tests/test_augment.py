"""Data augmentation: the compiled pass against its NumPy twin, known answers, the spec, the stream."""
import numpy as np
import pytest

from fastopt import _backend
from fastopt import _augment_kernels as compiled
from fastopt.augment import Augment, AugmentedBatch, mixup_softmax_loss, parse_spec
from fastopt.reference import augment as twin

DTYPES = [np.float32, np.float64]


def _bits(a):
    """Bytes of an array: a bitwise comparison (+0 and -0 differ, NaN payloads count)."""
    return np.ascontiguousarray(a).tobytes()


def _params(rng, n, c, h, w, dtype, noise_scale=0.1):
    d = c * h * w
    dy = rng.integers(-3, 4, n).astype(np.int64)
    dx = rng.integers(-3, 4, n).astype(np.int64)
    dy[::11] = h + 5            # whole image shifted out
    dx[::13] = -(w + 40)
    lam = rng.uniform(0, 1, n).astype(dtype)
    lam[::3] = 1                # no mixing for these
    return dict(x=rng.standard_normal((n, d)).astype(dtype), channels=c, height=h, width=w, dy=dy, dx=dx,
                flip=rng.integers(0, 2, n).astype(np.uint8), partner=rng.permutation(n).astype(np.int64),
                lam=lam, noise_keys=rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64), noise_scale=noise_scale)


def _run(module, args, n_threads):
    out = np.full(args["x"].shape, 7, args["x"].dtype)
    module.augment_batch(**args, out=out, n_threads=n_threads)
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (7, 3, 5, 7), (330, 3, 32, 32)], ids=["1", "odd", "1M"])
@pytest.mark.parametrize("noise_scale", [0.0, 0.25])
def test_kernel_matches_twin_bitwise_for_any_thread_count(dtype, shape, noise_scale):
    args = _params(np.random.default_rng(sum(shape)), *shape, dtype, noise_scale)
    assert args["x"].size >= 1_000_000 or shape[0] < 330
    want = _run(twin, args, 1)
    for n_threads in (1, 2, 3):
        assert _bits(_run(compiled, args, n_threads)) == _bits(want), f"threads={n_threads}"


def _image(h=3, w=3):
    return np.arange(1, h * w + 1, dtype=np.float64).reshape(1, h * w)


@pytest.mark.parametrize("module", [compiled, twin], ids=["compiled", "numpy"])
def test_shift_and_flip_known_answers(module):
    x = _image()          # [[1 2 3] [4 5 6] [7 8 9]]

    def run(dy, dx, flip):
        args = dict(x=x, channels=1, height=3, width=3, dy=np.array([dy]), dx=np.array([dx]),
                    flip=np.array([flip], np.uint8), partner=np.zeros(1, np.int64), lam=np.ones(1),
                    noise_keys=np.zeros(1, np.int64), noise_scale=0.0)
        return _run(module, args, 1).reshape(3, 3)

    np.testing.assert_array_equal(run(0, 0, 0), [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    np.testing.assert_array_equal(run(1, 0, 0), [[0, 0, 0], [1, 2, 3], [4, 5, 6]])     # down
    np.testing.assert_array_equal(run(0, 1, 0), [[0, 1, 2], [0, 4, 5], [0, 7, 8]])     # right
    np.testing.assert_array_equal(run(-1, -1, 0), [[5, 6, 0], [8, 9, 0], [0, 0, 0]])   # up, left
    np.testing.assert_array_equal(run(0, 0, 1), [[3, 2, 1], [6, 5, 4], [9, 8, 7]])     # mirror
    np.testing.assert_array_equal(run(0, 1, 1), [[0, 3, 2], [0, 6, 5], [0, 9, 8]])     # mirror, then right
    np.testing.assert_array_equal(run(3, 0, 0), np.zeros((3, 3)))
    np.testing.assert_array_equal(run(-2**62, 2**62, 1), np.zeros((3, 3)))


@pytest.mark.parametrize("module", [compiled, twin], ids=["compiled", "numpy"])
def test_mixup_and_noise_known_answers(module):
    x = np.array([[1.0, 2.0], [10.0, 20.0]])     # two 1x1x2 images
    args = dict(x=x, channels=1, height=1, width=2, dy=np.zeros(2, np.int64), dx=np.array([0, 1]),
                flip=np.zeros(2, np.uint8), partner=np.array([1, 0]), lam=np.array([0.25, 1.0]),
                noise_keys=np.array([3, -7]), noise_scale=0.0)
    out = _run(module, args, 1)
    # example 0: 0.25*[1, 2] + 0.75*(partner 1 shifted right: [0, 10]); example 1 shifted right
    np.testing.assert_array_equal(out, [[0.25, 0.5 + 7.5], [0.0, 10.0]])
    z = twin.normals(args["noise_keys"], 2)
    args["noise_scale"] = 0.5
    np.testing.assert_array_equal(_run(module, args, 1), out + 0.5 * z)


def test_polynomial_log_sin_cos_are_accurate():
    u = np.random.default_rng(0).uniform(0, 1, 100000)
    u[:3] = [2.0**-33, 0.5, 1.0]
    np.testing.assert_allclose(twin.poly_log(u), np.log(u), rtol=2e-12, atol=1e-15)   # noise, not math
    s, c = twin.poly_sincos_turns(u[3:] % 1.0)
    np.testing.assert_allclose(s, np.sin(2 * np.pi * (u[3:] % 1.0)), rtol=0, atol=1e-13)
    np.testing.assert_allclose(c, np.cos(2 * np.pi * (u[3:] % 1.0)), rtol=0, atol=1e-13)


@pytest.mark.parametrize("module", [compiled, twin], ids=["compiled", "numpy"])
def test_bad_sizes_are_refused_and_nothing_written(module):
    base = _params(np.random.default_rng(0), 5, 2, 3, 4, np.float64)
    cases = [("out", None), ("dy", np.zeros(4, np.int64)), ("partner", np.array([0, 1, 2, 3, 5])),
             ("partner", np.array([0, 1, 2, 3, -1])), ("noise_keys", np.zeros(6, np.int64)), ("channels", 3),
             ("lam", np.ones(6))]
    for name, value in cases:
        out = np.full((5, 24), 7.0)
        args = dict(base)
        if name == "out":
            out = np.full((5, 25), 7.0)
        else:
            args[name] = value
        with pytest.raises(ValueError, match=name if name != "channels" else "channels"):
            module.augment_batch(**args, out=out, n_threads=1)
        assert np.all(out == 7.0), name
    with pytest.raises(ValueError, match="n_threads"):
        module.augment_batch(**base, out=np.empty((5, 24)), n_threads=0)


# ------------------------------------------------------------------------------------------ the spec

def test_spec_parses_and_round_trips():
    o = parse_spec("shift:1, noise:0.05,flip,crop:2,mixup:0.2")
    assert o == {"shift": 1, "crop": 2, "flip": True, "noise": 0.05, "mixup": 0.2}
    assert parse_spec("") == parse_spec("none") == {"shift": 0, "crop": 0, "flip": False, "noise": 0.0, "mixup": 0.0}
    aug = Augment("noise:0.05,shift:1", image_shape="digits")
    assert aug.spec == "shift:1,noise:0.05" and parse_spec(aug.spec) == aug.options


@pytest.mark.parametrize("spec, match", [
    ("shift", "needs a value"), ("shift:x", "must be an int"), ("rotate:10", "unknown option"),
    ("flip:1", "takes no value"), ("shift:1,shift:2", "given twice"), ("noise:-1", ">= 0"),
    ("noise:nan", "finite"), ("shift:1.5", "must be an int"), ("shift:1,,noise:1", "unknown option")])
def test_malformed_specs_are_clear_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        Augment(spec)


def test_api_refuses_bad_input_and_leaves_x_alone():
    aug = Augment("shift:1", image_shape="digits")
    X = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    keep = X.copy()
    y = np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="64 features"):
        aug(X[:, :63].copy(), y, 0)
    with pytest.raises(TypeError, match="float32 or float64"):
        aug(X.astype(np.int32), y, 0)
    with pytest.raises(ValueError, match="y must be"):
        aug(X, y[:3], 0)
    with pytest.raises(ValueError, match="flattened"):
        Augment("shift:1")(X, y, 0)
    with pytest.raises(ValueError, match="image_shape"):
        aug(X.reshape(4, 1, 4, 16), y, 0)
    with pytest.raises(TypeError, match="rng_or_step"):
        aug(X, y, -1)
    out = aug(X, y, 0)
    np.testing.assert_array_equal(X, keep)
    assert out.X.shape == X.shape and out.X.dtype == X.dtype and out.X is not X


# ---------------------------------------------------------------------------------------- the stream

def _digits_like(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 16, (n, 64)).astype(np.float32), rng.integers(0, 10, n)


def test_draws_are_keyed_by_seed_step_and_example():
    X, y = _digits_like()
    aug = Augment("shift:2,crop:1,flip,noise:0.1", image_shape="digits", seed=3)
    a, b = aug(X, y, 5), aug(X, y, 5)
    assert _bits(a.X) == _bits(b.X)
    assert _bits(aug(X, y, 6).X) != _bits(a.X)
    assert _bits(Augment(aug.spec, image_shape="digits", seed=4)(X, y, 5).X) != _bits(a.X)
    # split the batch: each example keyed by its index gives the same augmentation
    first = aug(X[:13], y[:13], 5)
    second = aug(X[13:], y[13:], 5, indices=np.arange(13, 40))
    assert _bits(np.concatenate([first.X, second.X])) == _bits(a.X)
    # ... and by its identity wherever it sits in the batch
    perm = np.random.default_rng(1).permutation(40)
    shuffled = aug(X[perm], y[perm], 5, indices=perm)
    assert _bits(shuffled.X) == _bits(a.X[perm])


def test_same_result_on_numpy_backend_and_any_thread_count():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((64, 3, 32, 32))
    y = rng.integers(0, 10, 64)
    aug = Augment("shift:2,flip,noise:0.05,mixup:0.4", seed=1)
    _backend.set_num_threads(1)
    want = aug(X, y, 9)
    _backend.set_num_threads(2)
    assert _bits(aug(X, y, 9).X) == _bits(want.X)
    _backend.set_backend("numpy")
    got = aug(X, y, 9)
    assert _bits(got.X) == _bits(want.X) and np.array_equal(got.y_partner, want.y_partner)


def test_parameter_distributions():
    aug = Augment("shift:2,flip,noise:1", image_shape=(1, 4, 4))
    p = aug.draw(20000, 0, np.arange(20000, dtype=np.uint64))
    counts = np.bincount(p["dy"] + 2, minlength=5)
    assert set(np.unique(p["dx"])) == {-2, -1, 0, 1, 2}
    assert np.all(np.abs(counts / 20000 - 0.2) < 0.02), counts
    assert abs(p["flip"].mean() - 0.5) < 0.02
    z = twin.normals(p["noise_keys"], 16)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.mean(z**4) - 3) < 0.05                        # a normal's kurtosis
    for j in (1, 2, 15):                                        # pixels independent, pair or not
        assert abs(np.corrcoef(z[:, 0], z[:, j])[0, 1]) < 0.03
        assert abs(np.corrcoef(z[:, 0]**2, z[:, j]**2)[0, 1]) < 0.03


def test_generator_as_the_key_and_identity_spec():
    X, y = _digits_like(8)
    aug = Augment("shift:1,noise:0.1", image_shape="digits")
    a = aug(X, y, np.random.default_rng(5))
    b = aug(X, y, np.random.default_rng(5))
    assert _bits(a.X) == _bits(b.X)
    same = Augment("", image_shape="digits")(X, y, 0)
    assert _bits(same.X) == _bits(X) and np.all(same.lam == 1) and same.y_partner is not None


def test_noise_only_adds_scaled_gaussian():
    X = np.zeros((500, 64))
    out = Augment("noise:0.05", image_shape="digits")(X, np.zeros(500, np.int64), 1).X
    assert abs(out.std() - 0.05) < 0.002 and abs(out.mean()) < 0.001


# ---------------------------------------------------------------------------------------- mixup

def test_mixup_pairs_within_the_batch_and_soft_labels():
    X, y = _digits_like(30)
    batch = Augment("mixup:0.2", image_shape="digits")(X, y, 3)
    assert isinstance(batch, AugmentedBatch)
    assert np.all((batch.lam > 0) & (batch.lam < 1))
    assert sorted(batch.y_partner) == sorted(y)              # a permutation's labels
    t = batch.soft_labels(10)
    np.testing.assert_allclose(t.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    # each mixed row is lam * x + (1 - lam) * x_partner; recover the partner from the labels' pairing
    lam = batch.lam.astype(np.float64)[:, None]
    err = np.abs(batch.X[:, None, :] - (lam[:, None] * X[:, None, :] + (1 - lam[:, None]) * X[None, :, :]))
    best = err.max(axis=2).min(axis=1)
    assert best.max() < 1e-4                                    # every row is such a mix
    clear = batch.lam < 0.99                                    # lam ~ 1 hides the partner
    partner = err.max(axis=2).argmin(axis=1)
    np.testing.assert_array_equal(y[partner][clear], batch.y_partner[clear])
    assert clear.sum() >= 10


def test_mixup_loss_gradient_is_exact():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((6, 5))
    y, y2, lam = rng.integers(0, 5, 6), rng.integers(0, 5, 6), rng.uniform(0, 1, 6)
    loss, d = mixup_softmax_loss(scores, y, y2, lam)
    num = np.zeros_like(scores)
    h = 1e-5
    for idx in np.ndindex(scores.shape):
        s = scores.copy()
        s[idx] += h
        plus = mixup_softmax_loss(s, y, y2, lam)[0]
        s[idx] -= 2 * h
        num[idx] = (plus - mixup_softmax_loss(s, y, y2, lam)[0]) / (2 * h)
    rel = np.abs(num - d).max() / max(np.abs(num).max(), np.abs(d).max())
    assert rel < 1e-8, rel
    # lam = 1 is the plain softmax loss
    plain = mixup_softmax_loss(scores, y, y2, np.ones(6))[0]
    p = np.exp(scores - scores.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert abs(plain + np.log(p[np.arange(6), y]).mean()) < 1e-12


def test_augmented_copies_are_the_originals_then_keyed_augmented_batches():
    from fastopt.augment import Augment, augmented_copies
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 64)).astype(np.float32)
    y = np.arange(6) % 3
    X0 = X.copy()
    aug = Augment("shift:1,noise:0.05", image_shape="digits", seed=4)
    Xb, yb = augmented_copies(aug, X, y, 2)
    assert Xb.shape == (18, 64) and yb.tolist() == y.tolist() * 3
    assert Xb[:6].tobytes() == X.tobytes() and X.tobytes() == X0.tobytes()
    assert Xb[6:12].tobytes() == aug(X, y, 1).X.tobytes() and Xb[12:].tobytes() == aug(X, y, 2).X.tobytes()
    assert augmented_copies(aug, X, y, 0)[0].tobytes() == X.tobytes()
    with pytest.raises(ValueError, match="mixup"):
        augmented_copies(Augment("mixup:0.2", image_shape="digits"), X, y, 1)
    with pytest.raises(ValueError, match="features"):        # wrong shape: refused, nothing returned
        augmented_copies(aug, X[:, :63], y, 1)
    with pytest.raises(TypeError):
        augmented_copies("shift:1", X, y, 1)
