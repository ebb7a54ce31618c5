"""Pure-NumPy twins of fastopt._activation_kernels: same names, same signatures, same formulas.

Every function works on flat C-contiguous arrays of one dtype (float32 or float64):

    <name>_forward(x, param, out, n_threads)          out = f(x)
    <name>_backward(dout, saved, param, dx, n_threads) dx = dout * f'(.) from `saved`

`saved` is x for relu/leaky_relu and out for elu/tanh/sigmoid (whichever gives the derivative
without recomputing a transcendental function); fastopt.layers.activations.ACTIVATIONS says which.
`param` is negative_slope (leaky_relu), alpha (elu), ignored otherwise; it is rounded to the arrays'
precision first, as the kernels do. out may be x and dx may be dout (elementwise, in place).
Sizes and n_threads are checked as the kernels check them (fastopt.reference._contract); n_threads
is otherwise ignored.

The piecewise-linear ones (relu, leaky_relu, and every backward pass) agree with the kernels bit for
bit; elu/tanh/sigmoid forward call exp/expm1/tanh, whose NumPy and libm versions may differ in the
last bit or two.
"""
import numpy as np

from ._contract import check_size, threads

GRAIN = 32768   # the compiled module's (src/_activation_kernels.pyx), mirrored


def _check_forward(x, out, n_threads):
    check_size("out", out, x.shape[0])
    threads(n_threads)


def _check_backward(dout, saved, dx, n_threads):
    check_size("saved", saved, dout.shape[0])
    check_size("dx", dx, dout.shape[0])
    threads(n_threads)


def relu_forward(x, param, out, n_threads):
    """out = max(x, 0) (NaN stays NaN, like np.maximum); relu(-0.0) is -0.0, as the kernel, torch and
    CS231n's np.maximum(0, x) give it (np.maximum returns its second argument when they are equal)."""
    _check_forward(x, out, n_threads)
    np.maximum(x.dtype.type(0), x, out=out)


def relu_backward(dout, saved, param, dx, n_threads):
    """dx = dout where x > 0, else 0 (saved = x; a select: inf/NaN in dout do not leak)."""
    _check_backward(dout, saved, dx, n_threads)
    np.copyto(dx, np.where(saved > 0, dout, dout.dtype.type(0)))


def leaky_relu_forward(x, param, out, n_threads):
    """out = x where x > 0, else negative_slope * x."""
    _check_forward(x, out, n_threads)
    s = x.dtype.type(param)
    np.copyto(out, np.where(x > 0, x, s * x))


def leaky_relu_backward(dout, saved, param, dx, n_threads):
    """dx = dout where x > 0, else negative_slope * dout (saved = x)."""
    _check_backward(dout, saved, dx, n_threads)
    s = dout.dtype.type(param)
    np.copyto(dx, np.where(saved > 0, dout, s * dout))


def elu_forward(x, param, out, n_threads):
    """out = x where x > 0, else alpha * expm1(x)."""
    _check_forward(x, out, n_threads)
    a = x.dtype.type(param)
    with np.errstate(over="ignore"):
        # where, not np.minimum(x, 0): minimum gives +0.0 for x = -0.0, and elu(-0.0) is -0.0
        # (alpha * expm1(-0.0), as the kernel and torch compute it)
        neg = a * np.expm1(np.where(x > 0, x.dtype.type(0), x))
    np.copyto(out, np.where(x > 0, x, neg))


def elu_backward(dout, saved, param, dx, n_threads):
    """dx = dout where out > 0, else dout * (out + alpha)   (saved = out; f'(x) = alpha e^x = out + alpha)."""
    _check_backward(dout, saved, dx, n_threads)
    a = dout.dtype.type(param)
    np.copyto(dx, np.where(saved > 0, dout, dout * (saved + a)))


def tanh_forward(x, param, out, n_threads):
    """out = tanh(x)."""
    _check_forward(x, out, n_threads)
    np.tanh(x, out=out)


def tanh_backward(dout, saved, param, dx, n_threads):
    """dx = dout * (1 - out * out)   (saved = out)."""
    _check_backward(dout, saved, dx, n_threads)
    one = dout.dtype.type(1)
    np.multiply(dout, one - saved * saved, out=dx)


def sigmoid_forward(x, param, out, n_threads):
    """out = 1 / (1 + exp(-x)) for x >= 0, exp(x) / (1 + exp(x)) otherwise (no overflow)."""
    _check_forward(x, out, n_threads)
    one = x.dtype.type(1)
    e = np.exp(-np.abs(x))          # in (0, 1]: never overflows
    np.copyto(out, np.where(x >= 0, one / (one + e), e / (one + e)))


def sigmoid_backward(dout, saved, param, dx, n_threads):
    """dx = (dout * out) * (1 - out)   (saved = out)."""
    _check_backward(dout, saved, dx, n_threads)
    one = dout.dtype.type(1)
    np.multiply(dout * saved, one - saved, out=dx)
