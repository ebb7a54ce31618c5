"""The block cache behind large layer outputs (fastopt._buffers, fastopt.layers._operands.output)."""
import os
import signal
import threading
import time

import numpy as np
import pytest

import fastopt
from fastopt.layers import _operands
from fastopt.layers import activations, dropout, normalization

B = pytest.importorskip("fastopt._buffers")
MB = 1 << 20


def handler_of(a):
    """The memory handler that allocated a's data (a view's: its base array's)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return np._core.multiarray.get_handler_name(a)


@pytest.fixture
def fresh_cache():
    """An empty cache with the default limit, restored afterwards."""
    limit = B.stats()["limit"]
    B.set_limit(0)
    B.set_limit(limit)
    yield
    B.set_limit(limit)


def test_arrays_own_their_aligned_data(fresh_cache):
    for shape, dtype in [((1024, 4096), np.float32), ((3,), np.int64), ((0,), np.float64), ((7, 0), np.uint8)]:
        a = B.empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype
        assert a.flags.owndata and a.flags.c_contiguous and a.base is None
        assert a.ctypes.data % 64 == 0
        assert handler_of(a) == "fastopt_buffers"
    assert handler_of(np.empty(10)) == "default_allocator"     # the handler is never left installed


def test_a_freed_block_is_handed_out_again(fresh_cache):
    a = B.empty((MB,), np.float32)
    p, before = a.ctypes.data, B.stats()
    del a
    held = B.stats()
    assert (held["blocks"], held["bytes"]) == (before["blocks"] + 1, before["bytes"] + 4 * MB)
    b = B.empty((1024, 1024), np.float32)                       # same bytes, other shape
    after = B.stats()
    assert b.ctypes.data == p and after["hits"] == before["hits"] + 1 and after["blocks"] == before["blocks"]


def test_a_much_larger_block_is_not_used_for_a_small_request(fresh_cache):
    big = B.empty((8 * MB,), np.uint8)
    p = big.ctypes.data
    del big
    small = B.empty((MB,), np.uint8)
    assert small.ctypes.data != p and B.stats()["blocks"] == 1


def test_limit_and_eviction_oldest_first(fresh_cache):
    B.set_limit(3 * MB)
    arrays = [B.empty((MB,), np.uint8) for _ in range(4)]
    pointers = [a.ctypes.data for a in arrays]
    del arrays                                                  # the first freed is evicted by the fourth
    s = B.stats()
    assert (s["blocks"], s["bytes"], s["limit"]) == (3, 3 * MB, 3 * MB)
    again = {B.empty((MB,), np.uint8).ctypes.data for _ in range(1)}
    assert again <= set(pointers[1:])
    B.set_limit(0)
    assert B.stats()["blocks"] == 0 and B.stats()["bytes"] == 0
    a = B.empty((MB,), np.uint8)
    del a
    assert B.stats()["blocks"] == 0                            # limit 0 keeps nothing


def test_at_most_sixteen_blocks(fresh_cache):
    arrays = [B.empty((64 << 10,), np.uint8) for _ in range(20)]
    del arrays
    assert B.stats()["blocks"] == 16


def test_resize_keeps_the_data(fresh_cache):
    a = B.empty((MB,), np.float32)
    a[:] = np.arange(MB, dtype=np.float32)
    a.resize((3 * MB,), refcheck=False)
    np.testing.assert_array_equal(a[:MB], np.arange(MB, dtype=np.float32))
    a.resize((10,), refcheck=False)
    np.testing.assert_array_equal(a, np.arange(10, dtype=np.float32))


def test_bad_limits_are_refused():
    limit = B.stats()["limit"]
    with pytest.raises(ValueError, match="nbytes must be >= 0"):
        B.set_limit(-1)
    with pytest.raises(TypeError):
        B.set_limit("1")
    assert B.stats()["limit"] == limit


def test_threads_never_share_a_live_block(fresh_cache):
    # Each thread allocates, fills with its own value, frees, in a loop; a block handed to two
    # threads at once would show another thread's value.
    errors = []

    def work(k):
        for i in range(300):
            a = B.empty((MB // 4 + 64 * (i % 3),), np.int32)
            a.fill(k)
            if not (a == k).all():
                errors.append(k)
            del a

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert B.stats()["blocks"] <= 16


def test_layer_outputs_take_the_cache_above_the_threshold():
    rng = np.random.default_rng(0)
    big = rng.standard_normal((2048, 4096)).astype(np.float32)   # 32 MiB: the threshold
    small = big[:2040]                                           # just below it
    g, b = np.ones(4096, np.float32), np.zeros(4096, np.float32)
    assert big.nbytes == _operands.CACHED_OUTPUT_BYTES
    for x, name in [(big, "fastopt_buffers"), (small, "default_allocator")]:
        out, cache = normalization.layernorm_forward(x, g, b, {})
        dx, _, _ = normalization.layernorm_backward(x, cache)
        assert handler_of(out) == name and handler_of(dx) == name
        out, cache = dropout.dropout_forward(x, {"p": 0.5, "mode": "train", "seed": 1})
        assert handler_of(out) == name
        assert handler_of(cache[1]) == "default_allocator"      # the uint8 mask: a quarter of the bytes
        assert handler_of(dropout.dropout_backward(x, cache)) == name
        assert handler_of(activations.activation_forward("relu", x)[0]) == name


def test_reused_outputs_hold_new_results():
    # A loop whose outputs come back from the cache: every call's result equals a fresh computation
    # (the reused block's old contents never leak into a result).
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2048, 4096)).astype(np.float32)    # 32 MiB: its outputs are cached
    g, b = rng.standard_normal(4096).astype(np.float32), rng.standard_normal(4096).astype(np.float32)
    expected = [normalization.batchnorm_forward(x * s, g, b, {"mode": "train"})[0].copy() for s in (1, 2, 3)]
    hits = B.stats()["hits"]
    for s, want in zip((1, 2, 3), expected):
        out, _ = normalization.batchnorm_forward(x * s, g, b, {"mode": "train"})
        np.testing.assert_array_equal(out, want)
        del out
    assert B.stats()["hits"] >= hits + 2                       # the later calls wrote reused blocks


def test_output_without_the_compiled_core(monkeypatch):
    monkeypatch.setattr(_operands, "_buffers", None)
    a = _operands.output((1024, 1024), np.float32)
    assert handler_of(a) == "default_allocator" and a.shape == (1024, 1024)


def test_public_limit_and_stats(fresh_cache):
    fastopt.set_output_cache_limit(5 * MB)
    s = fastopt.output_cache_stats()
    assert s["limit"] == 5 * MB and set(s) == {"hits", "misses", "blocks", "bytes", "limit"}
    with pytest.raises(ValueError, match="nbytes"):
        fastopt.set_output_cache_limit(-5)
    with pytest.raises(TypeError, match="nbytes"):
        fastopt.set_output_cache_limit(2.5)
    assert fastopt.output_cache_stats()["limit"] == 5 * MB


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_inherit_a_held_lock():
    # Fork while the lock is held (as when another thread is inside the handler's malloc or free):
    # the child must still allocate large outputs. Without a new lock it would wait forever.
    with B._holding_lock():
        pid = os.fork()
        if pid == 0:                                    # the child: allocate, free, exit
            try:
                a = B.empty((MB,), np.float32)
                a.fill(1.0)
                del a
                code = 0
            except BaseException:
                code = 1
            os._exit(code)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung allocating from the buffer cache")
        time.sleep(0.01)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    B.empty((MB,), np.uint8)                            # the parent's lock was released
