"""Pure-NumPy twin of fastopt._dropout_kernels: same names, same signatures, same results.

`dropout_train` consumes the bit generator's stream exactly as the kernel does (one double per
element, u < p keeps), so both give the identical mask from the same generator state.
`dropout_train_philox` computes Philox4x32-10 in NumPy integer arithmetic (`philox4x32_10`) with
the kernel's layout and threshold, so both give the identical mask for any (seed, offset). The same
size checks as the kernels (ValueError) run before anything is drawn or written.
"""
import numpy as np

from ._contract import check_shapes, threads

GRAIN = 32768   # the compiled module's constant (elements per thread of dropout_apply); unused here


def _check(x, mask, out, n_threads):
    check_shapes(x.shape, mask=mask, out=out)
    threads(n_threads)


def dropout_train(x, p, scale, bit_generator, mask, out, n_threads=1):
    """mask = (u < p) for x.size uniform doubles u from `bit_generator`; out = x * (mask * scale)."""
    _check(x, mask, out, n_threads)
    if not isinstance(bit_generator, np.random.BitGenerator):
        raise TypeError(f"bit_generator must be a numpy.random.BitGenerator, got {type(bit_generator).__name__}")
    # A Generator wrapping the bit generator shares (and advances) its state and its lock.
    np.less(np.random.Generator(bit_generator).random(x.shape[0]), p, out=mask, casting="unsafe")
    dropout_apply(x, mask, scale, out, 1)


# Philox4x32-10 constants (Random123): multipliers and the key schedule's Weyl increments.
PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
PHILOX_ROUNDS = 10
PHILOX_GROUP = 64   # elements per group of 16 counters (the kernel's layout, see below)


def philox4x32_10(counter, key):
    """Philox4x32-10 of counters (4, n) (uint32; word 0 first) under key (k0, k1): (4, n) uint32."""
    c0, c1, c2, c3 = (np.asarray(w, np.uint32) for w in counter)
    k0, k1 = int(key[0]), int(key[1])
    m0, m1, shift = np.uint64(PHILOX_M[0]), np.uint64(PHILOX_M[1]), np.uint64(32)
    for _ in range(PHILOX_ROUNDS):
        p0, p1 = m0 * c0.astype(np.uint64), m1 * c2.astype(np.uint64)   # 32 x 32 -> 64 bits, exact
        c0, c1, c2, c3 = ((p1 >> shift).astype(np.uint32) ^ c1 ^ np.uint32(k0), p1.astype(np.uint32),
                          (p0 >> shift).astype(np.uint32) ^ c3 ^ np.uint32(k1), p0.astype(np.uint32))
        k0, k1 = (k0 + PHILOX_W[0]) & 0xFFFFFFFF, (k1 + PHILOX_W[1]) & 0xFFFFFFFF
    return np.stack([c0, c1, c2, c3])


def philox_words(seed, offset, n):
    """The 32-bit words of elements offset .. offset + n - 1: element g is word (g % 64) // 16 of
    the block with counter (g // 64) * 16 + g % 16 (64 bits in counter words 0-1), key = seed split
    in (low, high) 32-bit halves."""
    first, last = offset // PHILOX_GROUP, (offset + max(n, 1) - 1) // PHILOX_GROUP
    groups = np.arange(last - first + 1, dtype=np.uint64) + np.uint64(first)
    ctr = (groups[:, None] * np.uint64(16) + np.arange(16, dtype=np.uint64)).reshape(-1)
    zero = np.zeros(ctr.shape, np.uint32)
    words = philox4x32_10([ctr.astype(np.uint32), (ctr >> np.uint64(32)).astype(np.uint32), zero, zero],
                          (seed & 0xFFFFFFFF, seed >> 32))
    # (4 words, groups, 16 lanes) -> per group: word 0 of its 16 lanes, then word 1, ...
    flat = words.reshape(4, -1, 16).transpose(1, 0, 2).reshape(-1)
    start = offset - first * PHILOX_GROUP
    return flat[start:start + n]


def philox_threshold(p):
    """T of "keep iff word < T": floor(p * 2**32), 0 for p <= 0 or NaN, 2**32 for p >= 1."""
    if not p > 0.0:
        return 0
    return 1 << 32 if p >= 1.0 else int(float(p) * 4294967296.0)


def dropout_train_philox(x, p, scale, seed, offset, mask, out, n_threads):
    """mask = (philox word of (seed, offset + i) < T), out = x * (mask * scale); see the kernel."""
    _check(x, mask, out, n_threads)
    n = x.shape[0]
    if n and offset > 2**64 - n:
        raise ValueError(f"offset + x.size must be at most 2**64, got offset {offset} and {n} elements")
    np.less(philox_words(seed, offset, n).astype(np.uint64), philox_threshold(p), out=mask, casting="unsafe")
    dropout_apply(x, mask, scale, out, 1)


def dropout_apply(x, mask, scale, out, n_threads=1):
    """out = x * (mask * scale), with scale rounded to x's precision first; n_threads is ignored."""
    _check(x, mask, out, n_threads)
    np.multiply(x, mask * x.dtype.type(scale), out=out)
