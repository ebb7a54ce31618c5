"""dropout_forward reuses its last out/mask buffers only when nobody else holds them (or a view)."""
import threading

import numpy as np
import pytest

from fastopt.layers import dropout_backward, dropout_forward


def _addr(a):
    return a.__array_interface__["data"][0]


def _x(shape=(64, 128), dtype=np.float32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


PARAMS = [{"mode": "train", "p": 0.5, "seed": 3},
          {"mode": "train", "p": 0.7, "seed": 2**40 + 5, "generator": "philox"}]


@pytest.mark.parametrize("param", PARAMS, ids=["numpy", "philox"])
def test_held_results_are_never_written_again(param):
    x = _x()
    out1, cache1 = dropout_forward(x, param)
    want_out, want_mask = out1.copy(), cache1[1].copy()
    for _ in range(3):                                  # out1 and cache1 held all along
        out, cache = dropout_forward(x, param)
        assert not np.shares_memory(out, out1) and not np.shares_memory(cache[1], cache1[1])
        np.testing.assert_array_equal(out, want_out)   # a fixed seed: the same mask every call
    np.testing.assert_array_equal(out1, want_out)
    np.testing.assert_array_equal(cache1[1], want_mask)
    np.testing.assert_allclose(dropout_backward(np.ones_like(x), cache1), want_mask / param["p"], rtol=1e-6)


@pytest.mark.parametrize("param", PARAMS, ids=["numpy", "philox"])
def test_dropped_results_are_reused_with_the_same_values(param):
    x = _x()
    out, cache = dropout_forward(x, param)
    want = out.copy()
    addr_out, addr_mask = _addr(out), _addr(cache[1])
    del out, cache
    out, cache = dropout_forward(x, param)
    assert (_addr(out), _addr(cache[1])) == (addr_out, addr_mask)   # no new allocation
    np.testing.assert_array_equal(out, want)


def test_a_held_view_or_cache_keeps_its_array():
    x = _x()
    out, cache = dropout_forward(x, PARAMS[0])
    row = out[3]                                       # a view keeps out's buffer
    mask = cache[1]
    del out, cache
    out2, cache2 = dropout_forward(x, PARAMS[0])
    assert not np.shares_memory(out2, row) and not np.shares_memory(cache2[1], mask)
    del row, out2                                      # out's buffer free again, the mask still held
    out3, cache3 = dropout_forward(x, PARAMS[0])
    assert not np.shares_memory(cache3[1], mask) and not np.shares_memory(cache3[1], cache2[1])


def test_other_sizes_and_dtypes_allocate_and_threads_do_not_share():
    b, _ = dropout_forward(_x(dtype=np.float64), PARAMS[0])
    assert b.dtype == np.float64
    c, _ = dropout_forward(_x((7, 3)), PARAMS[0])
    assert c.shape == (7, 3)
    seen = {}

    def worker(i):
        o, cache = dropout_forward(_x(), PARAMS[0])
        seen[i] = (o, cache)                          # held: no other thread may write into it
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outs = [o for o, _ in seen.values()]
    assert all(not np.shares_memory(p, q) for i, p in enumerate(outs) for q in outs[i + 1:])
    for o in outs:
        np.testing.assert_array_equal(o, outs[0])
