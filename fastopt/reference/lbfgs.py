"""Pure-NumPy twins of the L-BFGS flat-buffer kernels in ``src/_lbfgs_kernels.pyx``.

Same names and signatures, the same size and n_threads checks (fastopt.reference._contract;
``n_threads`` otherwise ignored). Reductions follow the kernel's
partition: fixed BLOCK_SIZE-element blocks, each summed in double into N_LANES lanes (element k to
lane k % N_LANES, added in order), lanes added in order, blocks added in order. NumPy adds the rows
of a (rows, lanes) array in row order, so block sums match the kernel's up to the rounding of the
product terms, which are formed in double in both.
"""
import numpy as np

from ._contract import check_size, threads

GRAIN = 65536
BLOCK_SIZE = 4096
N_LANES = 8


def _blocked_sum(terms):
    """Sum a float64 1-D array with the kernel's block/lane order."""
    n = terms.shape[0]
    total = 0.0
    for lo in range(0, n, BLOCK_SIZE):
        block = terms[lo:lo + BLOCK_SIZE]
        pad = -block.shape[0] % N_LANES
        lanes = np.concatenate([block, np.zeros(pad)]).reshape(-1, N_LANES)
        acc = np.add.reduce(lanes, axis=0)     # row by row, in order
        s = 0.0
        for v in acc:
            s += float(v)
        total += s
    return total


def dot(x, y, n_threads):
    check_size("y", y, x.shape[0])
    threads(n_threads)
    return _blocked_sum(x.astype(np.float64) * y.astype(np.float64))


def abs_sum(x, n_threads):
    threads(n_threads)
    return _blocked_sum(np.abs(x.astype(np.float64)))


def abs_max(x, n_threads):
    threads(n_threads)
    if x.shape[0] == 0:
        return 0.0
    return float(np.max(np.abs(x.astype(np.float64))))


def axpy(y, a, x, n_threads):
    check_size("y", y, x.shape[0])
    threads(n_threads)
    y += y.dtype.type(a) * x


def axpy_dot(y, a, x, z, n_threads):
    check_size("z", z, x.shape[0])
    axpy(y, a, x, n_threads)
    return dot(y, z, n_threads)


def add_scaled(out, x, a, d, n_threads):
    check_size("out", out, x.shape[0])
    check_size("d", d, x.shape[0])
    threads(n_threads)
    out[...] = x + out.dtype.type(a) * d


def scale(out, a, x, n_threads):
    check_size("out", out, x.shape[0])
    threads(n_threads)
    np.multiply(x, out.dtype.type(a), out=out)
