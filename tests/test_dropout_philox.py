"""Counter-based dropout (generator 'philox'): Philox4x32-10 known answers, kernel == twin bit for bit
in every SIMD variant and thread count, the offset contract, statistics, and the layer API."""
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastopt import _backend
from fastopt.gradcheck import eval_numerical_gradient_array, rel_error
from fastopt.layers import dropout_backward, dropout_forward
from fastopt.reference import dropout as R


VARIANTS = list(_backend.compiled_variants("dropout").values())
per_variant = pytest.mark.parametrize("K", VARIANTS, ids=[m.SIMD_VARIANT for m in VARIANTS])
DTYPES = [np.float32, np.float64]

# Random123's kat_vectors for philox4x32 with 10 rounds: (counter words 0-3, key words 0-1) -> output.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr, key, want", KAT)
def test_twin_philox_known_answers(ctr, key, want):
    got = R.philox4x32_10([np.array([c], np.uint32) for c in ctr], key)[:, 0]
    assert [int(v) for v in got] == list(want)


@per_variant
@pytest.mark.parametrize("ctr, key, want", KAT)
def test_kernel_philox_known_answers(K, ctr, key, want):
    out = np.zeros(4, np.uint32)
    K._philox4x32_10(np.array(ctr, np.uint32), np.array(key, np.uint32), out)
    assert [int(v) for v in out] == list(want)


def _philox4x64_10(ctr, key):
    """The twin's round structure with 64-bit words (mulhi by 32-bit limbs): NumPy's own Philox
    (np.random.Philox, Philox4x64-10) is then an independent oracle of that structure."""
    mask = (1 << 64) - 1
    m, w = (0xD2E7470EE14C6C93, 0xCA5A826395121157), (0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B)
    c, k = list(ctr), list(key)
    for _ in range(10):
        p0, p1 = m[0] * c[0], m[1] * c[2]
        c = [(p1 >> 64) ^ c[1] ^ k[0], p1 & mask, (p0 >> 64) ^ c[3] ^ k[1], p0 & mask]
        k = [(k[0] + w[0]) & mask, (k[1] + w[1]) & mask]
    return c


def test_philox_structure_agrees_with_numpys_philox4x64():
    key = (0x243F6A8885A308D3, 0x13198A2E03707344)
    bg = np.random.Philox(key=np.array(key, np.uint64), counter=np.array([41, 0, 0, 0], np.uint64))
    # NumPy increments the counter before each block: its first block is counter 42.
    assert [int(v) for v in bg.random_raw(4)] == _philox4x64_10((42, 0, 0, 0), key)
    # An all-ones counter wraps to 0: Random123's zero known answer for philox4x64-10.
    bg = np.random.Philox(key=np.zeros(2, np.uint64), counter=np.full(4, 2**64 - 1, np.uint64))
    assert [int(v) for v in bg.random_raw(4)] == _philox4x64_10((0, 0, 0, 0), (0, 0)) == [
        0x16554D9ECA36314C, 0xDB20FE9D672D0FDC, 0xD7E772CEE186176B, 0x7E68B68AEC7BA23B]


def _both(K, x, p, seed, offset, n_threads):
    got = [np.full(x.size, 7, np.uint8), np.full_like(x, np.nan)]
    want = [np.full(x.size, 7, np.uint8), np.full_like(x, np.nan)]
    K.dropout_train_philox(x, p, 1.0 / p, seed, offset, *got, n_threads)
    R.dropout_train_philox(x, p, 1.0 / p, seed, offset, *want, n_threads)
    return got, want


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1, 7, 63, 64, 65, 1023, 1_000_003])
def test_kernel_matches_twin_bitwise(dtype, size):
    """Every variant on 1 and 2 threads against one twin result (the twin is the slow part)."""
    rng = np.random.default_rng(size)
    x = rng.standard_normal(size).astype(dtype)
    for seed, offset, p in [(0, 0, 0.5), (2**64 - 1, 13, 0.8), (123456789, 2**40 + 5, 0.1)]:
        want = [np.full(x.size, 7, np.uint8), np.full_like(x, np.nan)]
        R.dropout_train_philox(x, p, 1.0 / p, seed, offset, *want, 1)
        assert set(np.unique(want[0])) <= {0, 1}
        for K in VARIANTS:
            for n_threads in (1, 2):
                got = [np.full(x.size, 7, np.uint8), np.full_like(x, np.nan)]
                K.dropout_train_philox(x, p, 1.0 / p, seed, offset, *got, n_threads)
                where = (K.SIMD_VARIANT, n_threads, seed, offset)
                assert got[0].tobytes() == want[0].tobytes(), where
                assert got[1].tobytes() == want[1].tobytes(), where


@given(size=st.integers(1, 3000), offset=st.integers(0, 2**64 - 3001), seed=st.integers(0, 2**64 - 1),
       p=st.floats(1e-3, 1.0), dtype=st.sampled_from(DTYPES), n_threads=st.sampled_from([1, 2]),
       K=st.sampled_from(VARIANTS))
@settings(max_examples=60, deadline=None)
def test_kernel_matches_twin_anywhere(size, offset, seed, p, dtype, n_threads, K):
    x = np.random.default_rng(size).standard_normal(size).astype(dtype)
    (mk, ok), (mr, orr) = _both(K, x, p, seed, offset, n_threads)
    assert mk.tobytes() == mr.tobytes() and ok.tobytes() == orr.tobytes()


def test_every_variant_and_thread_count_gives_the_same_bits():
    x = np.random.default_rng(1).standard_normal(300_001).astype(np.float32)
    results = set()
    for K in VARIANTS:
        for n_threads in (1, 2):
            mask, out = np.empty(x.size, np.uint8), np.empty_like(x)
            K.dropout_train_philox(x, 0.7, 1 / 0.7, 99, 5, mask, out, n_threads)
            results.add(mask.tobytes() + out.tobytes())
    assert len(results) == 1


@per_variant
def test_offset_reproduces_a_slice_of_the_whole(K):
    x = np.random.default_rng(2).standard_normal(100_000)
    whole_mask, whole_out = np.empty(x.size, np.uint8), np.empty_like(x)
    K.dropout_train_philox(x, 0.5, 2.0, 7, 0, whole_mask, whole_out, 2)
    for a, b in [(0, 1), (1, 64), (63, 130), (4096, 50_001), (99_999, 100_000)]:
        mask, out = np.empty(b - a, np.uint8), np.empty(b - a)
        K.dropout_train_philox(x[a:b], 0.5, 2.0, 7, a, mask, out, 1)
        assert mask.tobytes() == whole_mask[a:b].tobytes()
        assert out.tobytes() == whole_out[a:b].tobytes()


@per_variant
def test_threshold_edges(K):
    x = np.ones(10_000)
    mask, out = np.empty(x.size, np.uint8), np.empty_like(x)
    K.dropout_train_philox(x, 1.0, 1.0, 3, 0, mask, out, 1)
    assert mask.all()
    K.dropout_train_philox(x, 0.0, 1.0, 3, 0, mask, out, 1)
    assert not mask.any() and not out.any()
    K.dropout_train_philox(x, float("nan"), 1.0, 3, 0, mask, out, 1)
    assert not mask.any()
    # p = 2**-32 keeps exactly the elements whose word is 0: none in 10,000 words unless one is 0.
    words = R.philox_words(3, 0, x.size)
    K.dropout_train_philox(x, 2.0**-32, 1.0, 3, 0, mask, out, 1)
    np.testing.assert_array_equal(mask, words == 0)


@per_variant
def test_offset_overflow_is_refused(K):
    x = np.ones(10)
    mask, out = np.zeros(10, np.uint8), np.zeros(10)
    with pytest.raises(ValueError, match="offset"):
        K.dropout_train_philox(x, 0.5, 2.0, 3, 2**64 - 9, mask, out, 1)
    assert not mask.any() and not out.any()
    K.dropout_train_philox(x, 0.5, 2.0, 3, 2**64 - 10, mask, out, 1)    # the last 10 elements: fine
    with pytest.raises(ValueError, match="offset"):
        R.dropout_train_philox(x, 0.5, 2.0, 3, 2**64 - 9, mask, out, 1)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_fraction_and_independence(p):
    n = 1 << 20
    mask = np.empty(n, np.uint8)
    VARIANTS[-1].dropout_train_philox(np.ones(n), p, 1.0, 2024, 0, mask, np.empty(n), 2)
    # Binomial: 5 standard deviations.
    assert abs(mask.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    # Neighbours (same Philox block, adjacent lanes) are uncorrelated.
    m = mask.astype(np.float64)
    for lag in (1, 16, 64):
        corr = np.corrcoef(m[:-lag], m[lag:])[0, 1]
        assert abs(corr) < 5 / np.sqrt(n)


# ---------------------------------------------------------------- the layer


def test_layer_philox_matches_kernel_and_twin_on_both_backends():
    x = np.random.default_rng(3).standard_normal((257, 1031)).astype(np.float32)
    param = {"mode": "train", "p": 0.6, "seed": 11, "generator": "philox", "offset": 5}
    outs = []
    with _backend.preserved():
        for backend in ("cython", "numpy"):
            _backend.set_backend(backend)
            for threads in (1, 2):
                _backend.set_num_threads(threads)
                out, cache = dropout_forward(x, param)
                outs.append((out.tobytes(), cache[1].tobytes()))
    assert len(set(outs)) == 1
    mask = np.empty(x.size, np.uint8)
    R.dropout_train_philox(x.reshape(-1), 0.6, 1 / 0.6, 11, 5, mask, np.empty(x.size, np.float32), 1)
    assert outs[0][1] == mask.tobytes()


def test_layer_rows_of_a_batch_reproduce_the_batch():
    x = np.random.default_rng(4).standard_normal((64, 300))
    param = {"mode": "train", "p": 0.5, "seed": 5, "generator": "philox"}
    whole, _ = dropout_forward(x, param)
    a, b = 10, 37
    part, _ = dropout_forward(x[a:b], dict(param, offset=a * x.shape[1]))
    np.testing.assert_array_equal(part, whole[a:b])


def test_layer_philox_same_seed_same_mask_new_seed_new_mask():
    x = np.ones((100, 100))
    p = {"mode": "train", "p": 0.5, "seed": 1, "generator": "philox"}
    m1, m2 = dropout_forward(x, p)[1][1], dropout_forward(x, p)[1][1]
    m3 = dropout_forward(x, dict(p, seed=2))[1][1]
    np.testing.assert_array_equal(m1, m2)
    assert (m1 != m3).mean() > 0.4


def test_default_generator_is_still_cs231ns_stream():
    x = np.ones((50, 40))
    out = dropout_forward(x, {"mode": "train", "p": 0.3, "seed": 7, "generator": "numpy"})[0]
    np.random.seed(7)      # CS231n's reference mask, from a RandomState of the same seed
    want = (np.random.RandomState(7).rand(*x.shape) < 0.3) / 0.3
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(out, dropout_forward(x, {"mode": "train", "p": 0.3, "seed": 7})[0])


@pytest.mark.parametrize("p", [0.3, 0.8])
def test_philox_numerical_gradient(p):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 11))
    dout = rng.standard_normal((10, 11))
    param = {"mode": "train", "p": p, "seed": 123, "generator": "philox"}
    _, cache = dropout_forward(x, param)
    dx = dropout_backward(dout, cache)
    dx_num = eval_numerical_gradient_array(lambda xx: dropout_forward(xx, param)[0], x, dout)
    assert rel_error(dx, dx_num) < 1e-9


@pytest.mark.parametrize("param, error, fragment", [
    ({"p": 0.5, "mode": "train", "generator": "philox"}, ValueError, "needs dropout_param['seed']"),
    ({"p": 0.5, "mode": "train", "generator": "philox", "seed": -1}, ValueError, "[0, 2**64)"),
    ({"p": 0.5, "mode": "train", "generator": "philox", "seed": 2**64}, ValueError, "[0, 2**64)"),
    ({"p": 0.5, "mode": "train", "generator": "philox", "seed": 1.0}, TypeError, "seed'] must be an int"),
    ({"p": 0.5, "mode": "train", "generator": "philox", "seed": 1, "offset": -1}, ValueError, "offset"),
    ({"p": 0.5, "mode": "train", "generator": "philox", "seed": 1, "offset": "3"}, TypeError, "offset"),
    ({"p": 0.5, "mode": "train", "generator": "philox", "seed": 1, "rng": np.random.default_rng()},
     ValueError, "not both"),
    ({"p": 0.5, "mode": "train", "generator": "philox", "rng": np.random.default_rng()}, ValueError, "not from 'rng'"),
    ({"p": 0.5, "mode": "train", "generator": "mt"}, ValueError, "dropout_param['generator'] must be one of"),
    ({"p": 0.5, "mode": "train", "seed": 1, "offset": 3}, ValueError, "offset'] is for generator 'philox'"),
    ({"p": 0.5, "mode": "train", "generator": "philox", "seed": 1, "offset": 2**64 - 3}, ValueError,
     "offset + x.size"),
])
def test_bad_philox_param(param, error, fragment):
    x = np.ones((4, 4))
    with pytest.raises(error, match=re.escape(fragment)):
        dropout_forward(x, param)
    np.testing.assert_array_equal(x, 1.0)
