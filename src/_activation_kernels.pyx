# Elementwise activation kernels, forward and backward, on flat C-contiguous float32/float64 arrays.
#
# Twin: fastopt/reference/activations.py (same names, signatures and formulas). The table that ties
# each activation to its kernels, its hyperparameter and its recommended init is
# fastopt.layers.activations.ACTIVATIONS.
#
#     <name>_forward(x, param, out, n_threads)            out = f(x)                 (out may be x)
#     <name>_backward(dout, saved, param, dx, n_threads)  dx = dout * f'(...)        (dx may be dout)
#
# `saved` is x (relu, leaky_relu) or out (elu, tanh, sigmoid): the derivative of the last three is a
# polynomial in out, so backward needs no exp/tanh. `param` is negative_slope (leaky_relu) or alpha
# (elu), rounded once to the arrays' precision; other kernels ignore it (one signature for all, so the
# layer functions and the model call every activation the same way).
#
# Every buffer's size and n_threads are checked (src/_contract.pxd) before any element is touched.
#
# Elementwise: each element is written by exactly one thread from its own inputs, so results are
# bitwise independent of the thread count. Arithmetic in the arrays' precision (expf/expm1f/tanhf
# for float32). The transcendental calls are libm's scalar functions (no vector libm without
# -ffast-math). Checked with -fopt-info-vec-optimized: relu/leaky_relu forward and the relu,
# leaky_relu, elu, tanh, sigmoid backward loops vectorize in float32 (some float64 ones stay scalar
# on the SSE2 baseline).
from cython cimport floating
from cython.parallel cimport prange

from _contract cimport check_size, threads
from _fastmath cimport f_abs, f_exp, f_expm1, f_max, f_tanh

# Elements per thread below which a kernel stays on one thread: threads_for(n, GRAIN). The dropout
# scaling pass (the same one-read-one-write shape) measured 64k float32 elements at 0.023 ms on 1
# thread vs 0.016 ms on 2; relu_forward here (median of 41, 2 cores, load average ~17, so rough):
# 32k 10.9 vs 8.5 us, 64k 20 vs 13 us, 1M 278 vs 143 us. The exp/tanh kernels do more work per
# element, so this is conservative for them (their timings drowned in the load).
GRAIN = 32768


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* c ? a : b as a bit mask. GCC kept `c ? a : b` (Cython's `a if c else b`) as control flow
       ("not vectorized: control flow in loop") in the relu/leaky_relu/elu loops here, and a branch
       on the random sign of activations mispredicts (see the same helper in _mlp_kernels.pyx:
       2.4 ms instead of ~0.3 ms). The result is bitwise the select's. */
    static inline float fo_act_sel_f(int c, float a, float b) {
        uint32_t ia, ib, m = (uint32_t)0 - (uint32_t)(c != 0);
        memcpy(&ia, &a, sizeof ia); memcpy(&ib, &b, sizeof ib);
        ia = (ia & m) | (ib & ~m); memcpy(&a, &ia, sizeof ia); return a;
    }
    static inline double fo_act_sel_d(int c, double a, double b) {
        uint64_t ia, ib, m = (uint64_t)0 - (uint64_t)(c != 0);
        memcpy(&ia, &a, sizeof ia); memcpy(&ib, &b, sizeof ib);
        ia = (ia & m) | (ib & ~m); memcpy(&a, &ia, sizeof ia); return a;
    }
    """
    float fo_act_sel_f(int c, float a, float b) noexcept nogil
    double fo_act_sel_d(int c, double a, double b) noexcept nogil


cdef inline floating _sel(bint c, floating a, floating b) noexcept nogil:
    """a where c else b, without a branch."""
    if floating is float:
        return fo_act_sel_f(c, a, b)
    else:
        return fo_act_sel_d(c, a, b)


# ---------------------------------------------------------------------------------------------
# forward: out = f(x)
# ---------------------------------------------------------------------------------------------

def relu_forward(const floating[::1] x not None,   # IN
                 double param,                     # unused
                 floating[::1] out not None,       # OUT max(x, 0); may be x
                 int n_threads):
    """out = max(x, 0) (NaN propagates, like np.maximum)."""
    cdef Py_ssize_t n = x.shape[0], i
    check_size("out", out.shape[0], n)
    n_threads = threads(n_threads)
    with nogil:
        for i in prange(n, schedule='static', num_threads=n_threads):
            out[i] = f_max(x[i], <floating>0)


def leaky_relu_forward(const floating[::1] x not None,   # IN
                       double param,                     # negative_slope
                       floating[::1] out not None,       # OUT; may be x
                       int n_threads):
    """out = x where x > 0, else negative_slope * x."""
    cdef Py_ssize_t n = x.shape[0], i
    cdef floating s = <floating>param
    cdef floating v
    check_size("out", out.shape[0], n)
    n_threads = threads(n_threads)
    with nogil:
        for i in prange(n, schedule='static', num_threads=n_threads):
            v = x[i]
            out[i] = _sel(v > 0, v, s * v)


def elu_forward(const floating[::1] x not None,   # IN
                double param,                     # alpha
                floating[::1] out not None,       # OUT; may be x
                int n_threads):
    """out = x where x > 0, else alpha * expm1(x)."""
    cdef Py_ssize_t n = x.shape[0], i
    cdef floating a = <floating>param
    cdef floating v
    check_size("out", out.shape[0], n)
    n_threads = threads(n_threads)
    with nogil:
        for i in prange(n, schedule='static', num_threads=n_threads):
            v = x[i]
            out[i] = v if v > 0 else a * f_expm1(v)


def tanh_forward(const floating[::1] x not None,   # IN
                 double param,                     # unused
                 floating[::1] out not None,       # OUT; may be x
                 int n_threads):
    """out = tanh(x)."""
    cdef Py_ssize_t n = x.shape[0], i
    check_size("out", out.shape[0], n)
    n_threads = threads(n_threads)
    with nogil:
        for i in prange(n, schedule='static', num_threads=n_threads):
            out[i] = f_tanh(x[i])


def sigmoid_forward(const floating[::1] x not None,   # IN
                    double param,                     # unused
                    floating[::1] out not None,       # OUT; may be x
                    int n_threads):
    """out = 1 / (1 + e) for x >= 0, e / (1 + e) otherwise, with e = exp(-|x|) (never overflows)."""
    cdef Py_ssize_t n = x.shape[0], i
    cdef floating v, e
    check_size("out", out.shape[0], n)
    n_threads = threads(n_threads)
    with nogil:
        for i in prange(n, schedule='static', num_threads=n_threads):
            v = x[i]
            e = f_exp(-f_abs(v))
            out[i] = <floating>1 / (<floating>1 + e) if v >= 0 else e / (<floating>1 + e)


# ---------------------------------------------------------------------------------------------
# backward: dx = dout * f'(.)
# ---------------------------------------------------------------------------------------------

def relu_backward(const floating[::1] dout not None,    # IN
                  const floating[::1] saved not None,   # IN x
                  double param,                         # unused
                  floating[::1] dx not None,            # OUT; may be dout
                  int n_threads):
    """dx = dout where x > 0, else 0 (a select: inf/NaN in dout do not leak into dead units)."""
    cdef Py_ssize_t n = dout.shape[0], i
    check_size("saved", saved.shape[0], n)
    check_size("dx", dx.shape[0], n)
    n_threads = threads(n_threads)
    with nogil:
        for i in prange(n, schedule='static', num_threads=n_threads):
            dx[i] = _sel(saved[i] > 0, dout[i], <floating>0)


def leaky_relu_backward(const floating[::1] dout not None,    # IN
                        const floating[::1] saved not None,   # IN x
                        double param,                         # negative_slope
                        floating[::1] dx not None,            # OUT; may be dout
                        int n_threads):
    """dx = dout where x > 0, else negative_slope * dout."""
    cdef Py_ssize_t n = dout.shape[0], i
    cdef floating s = <floating>param
    cdef floating g
    check_size("saved", saved.shape[0], n)
    check_size("dx", dx.shape[0], n)
    n_threads = threads(n_threads)
    with nogil:
        for i in prange(n, schedule='static', num_threads=n_threads):
            g = dout[i]
            dx[i] = _sel(saved[i] > 0, g, s * g)


def elu_backward(const floating[::1] dout not None,    # IN
                 const floating[::1] saved not None,   # IN out
                 double param,                         # alpha
                 floating[::1] dx not None,            # OUT; may be dout
                 int n_threads):
    """dx = dout where out > 0, else dout * (out + alpha)   (alpha * e^x = out + alpha for x <= 0)."""
    cdef Py_ssize_t n = dout.shape[0], i
    cdef floating a = <floating>param
    cdef floating g, o
    check_size("saved", saved.shape[0], n)
    check_size("dx", dx.shape[0], n)
    n_threads = threads(n_threads)
    with nogil:
        for i in prange(n, schedule='static', num_threads=n_threads):
            g = dout[i]
            o = saved[i]
            dx[i] = _sel(o > 0, g, g * (o + a))


def tanh_backward(const floating[::1] dout not None,    # IN
                  const floating[::1] saved not None,   # IN out
                  double param,                         # unused
                  floating[::1] dx not None,            # OUT; may be dout
                  int n_threads):
    """dx = dout * (1 - out * out)."""
    cdef Py_ssize_t n = dout.shape[0], i
    cdef floating o
    check_size("saved", saved.shape[0], n)
    check_size("dx", dx.shape[0], n)
    n_threads = threads(n_threads)
    with nogil:
        for i in prange(n, schedule='static', num_threads=n_threads):
            o = saved[i]
            dx[i] = dout[i] * (<floating>1 - o * o)


def sigmoid_backward(const floating[::1] dout not None,    # IN
                     const floating[::1] saved not None,   # IN out
                     double param,                         # unused
                     floating[::1] dx not None,            # OUT; may be dout
                     int n_threads):
    """dx = (dout * out) * (1 - out)."""
    cdef Py_ssize_t n = dout.shape[0], i
    cdef floating o
    check_size("saved", saved.shape[0], n)
    check_size("dx", dx.shape[0], n)
    n_threads = threads(n_threads)
    with nogil:
        for i in prange(n, schedule='static', num_threads=n_threads):
            o = saved[i]
            dx[i] = (dout[i] * o) * (<floating>1 - o)
