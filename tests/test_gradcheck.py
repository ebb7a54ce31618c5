"""The gradient checkers on functions whose gradients are known in closed form."""
import numpy as np
import pytest

from fastopt.gradcheck import (eval_numerical_gradient, eval_numerical_gradient_array, grad_check_sparse,
                               rel_error)


@pytest.fixture
def x():
    return np.random.default_rng(7).standard_normal((3, 4))


def test_eval_numerical_gradient_known(x):
    original = x.copy()
    grad = eval_numerical_gradient(lambda v: np.sum(np.sin(v)) + np.sum(v**3), x, verbose=False)
    assert rel_error(grad, np.cos(x) + 3 * x**2) < 1e-8
    assert x.tobytes() == original.tobytes()  # every probe was undone exactly


def test_eval_numerical_gradient_of_quadratic_is_exact_up_to_rounding(x):
    # Centered differences are exact for quadratics: only rounding error remains.
    grad = eval_numerical_gradient(lambda v: np.sum(v**2), x, verbose=False, h=1e-3)
    np.testing.assert_allclose(grad, 2 * x, rtol=1e-9, atol=1e-9)


def test_verbose_prints_each_index(x, capsys):
    eval_numerical_gradient(lambda v: np.sum(v), x[:1, :2].copy(), verbose=True)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and printed[0].startswith("(0, 0)") and printed[1].startswith("(0, 1)")


def test_x_restored_when_f_raises(x):
    original = x.copy()
    calls = []

    def f(v):
        calls.append(1)
        if len(calls) == 4:  # during the second probe, after x[ix] was moved
            raise RuntimeError("boom")
        return np.sum(v)

    with pytest.raises(RuntimeError, match="boom"):
        eval_numerical_gradient(f, x, verbose=False)
    assert x.tobytes() == original.tobytes()
    with pytest.raises(RuntimeError, match="boom"):
        calls.clear()
        eval_numerical_gradient_array(lambda v: f(v) * np.ones(2), x, np.ones(2))
    assert x.tobytes() == original.tobytes()


def test_eval_numerical_gradient_array_known(x):
    a = np.random.default_rng(8).standard_normal((5, 3))
    df = np.random.default_rng(9).standard_normal((5, 4))
    original = x.copy()
    grad = eval_numerical_gradient_array(lambda v: a @ v, x, df)
    assert rel_error(grad, a.T @ df) < 1e-8
    assert x.tobytes() == original.tobytes()


def test_eval_numerical_gradient_array_copies_a_reused_output(x):
    buffer = np.empty_like(x)

    def f(v):  # returns the same array each call, like a layer writing into a preallocated buffer
        np.multiply(v, 2.0, out=buffer)
        return buffer

    grad = eval_numerical_gradient_array(f, x, np.ones_like(x))
    np.testing.assert_allclose(grad, 2.0, rtol=1e-9)


def test_rel_error_refuses_complex_values():
    with pytest.raises(TypeError, match="x must be real"):
        rel_error(np.array([1 + 1j]), np.array([1.0]))
    with pytest.raises(TypeError, match="y must be real"):
        rel_error(1.0, 1j)


def test_rel_error_known():
    assert rel_error(1.0, 1.0) == 0.0
    assert rel_error(1.0, 3.0) == 0.5
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 6.0])) == 0.5  # the max over elements
    assert rel_error(0.0, 1e-12) == pytest.approx(1e-4)  # the 1e-8 floor of the denominator
    with pytest.raises(ValueError, match="same shape"):
        rel_error(np.ones(2), np.ones(3))


def test_grad_check_sparse(x, capsys):
    f = lambda v: np.sum(np.exp(v))  # noqa: E731  (a gradient bounded away from 0)
    errors = grad_check_sparse(f, x, np.exp(x), num_checks=6, seed=0)
    assert errors.shape == (6,) and np.all(errors < 1e-8)
    assert len(capsys.readouterr().out.splitlines()) == 6
    wrong = grad_check_sparse(f, x, 2 * np.exp(x), num_checks=6, seed=0, verbose=False)
    np.testing.assert_allclose(wrong, 1 / 3, rtol=1e-6)  # |g - 2g| / (g + 2g)
    again = grad_check_sparse(f, x, 2 * np.exp(x), num_checks=6, seed=0, verbose=False)
    np.testing.assert_array_equal(wrong, again)


def test_grad_check_sparse_picks_indices_from_seed():
    x = np.zeros((4, 5))
    # An analytic gradient right at one index only: the checks that land elsewhere give error 0.
    g = np.zeros_like(x)
    g[2, 3] = 1.0
    rng = np.random.default_rng(3)
    expected = [1.0 if (int(rng.integers(4)), int(rng.integers(5))) == (2, 3) else 0.0 for _ in range(40)]
    errors = grad_check_sparse(lambda v: 0.0, x, g, num_checks=40, seed=3, verbose=False)
    np.testing.assert_array_equal(errors, expected)
    assert 0 < sum(expected) < 40


@pytest.mark.parametrize("call, error, fragment", [
    (lambda x: eval_numerical_gradient(np.sum, x.astype(np.int64)), TypeError, "x must have dtype"),
    (lambda x: eval_numerical_gradient(np.sum, x, h=0.0), ValueError, "h must be > 0"),
    (lambda x: eval_numerical_gradient(np.sum, x.tolist()), TypeError, "x must be a NumPy array"),
    (lambda x: eval_numerical_gradient_array(lambda v: v, x, np.ones(3)), ValueError, "df must have the shape"),
    (lambda x: grad_check_sparse(np.sum, x, np.ones(3)), ValueError, "analytic_grad must have shape"),
    (lambda x: grad_check_sparse(np.sum, x, np.ones_like(x), num_checks=0), ValueError, "num_checks"),
])
def test_bad_input(x, call, error, fragment):
    original = x.copy()
    with pytest.raises(error, match=fragment):
        call(x)
    assert x.tobytes() == original.tobytes()


def test_read_only_x_refused(x):
    x.flags.writeable = False
    with pytest.raises(ValueError, match="x must be writeable"):
        eval_numerical_gradient(np.sum, x, verbose=False)
