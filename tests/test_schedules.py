"""Learning-rate schedules: known values from their formulas, validation."""
import math

import pytest

from fastopt.schedules import CosineLR, ExponentialLR, LinearWarmup, StepLR


def values(schedule, ts, base=1.0):
    return [schedule(t, base) for t in ts]


def test_step():
    assert values(StepLR(2, 0.5), range(6)) == [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert StepLR(3)(7, 0.2) == pytest.approx(0.2 * 0.01)


def test_exponential():
    assert values(ExponentialLR(0.9), range(4), 2.0) == pytest.approx([2.0, 1.8, 1.62, 1.458])


def test_cosine():
    s = CosineLR(10, eta_min=0.1)
    assert s(0, 1.0) == 1.0
    assert s(5, 1.0) == pytest.approx(0.55)
    assert s(10, 1.0) == pytest.approx(0.1) and s(25, 1.0) == 0.1
    assert CosineLR(4)(1, 2.0) == pytest.approx(1 + math.cos(math.pi / 4))


def test_linear_warmup():
    assert values(LinearWarmup(4), [0, 1, 2, 3, 4, 100]) == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    s = LinearWarmup(2, after=StepLR(2, 0.1))
    assert values(s, range(7)) == pytest.approx([0.5, 1, 1, 1, 0.1, 0.1, 0.01])


def test_equality_and_repr():
    assert StepLR(2, 0.5) == StepLR(2, 0.5) != StepLR(2, 0.25)
    assert repr(LinearWarmup(3, CosineLR(5))) == "LinearWarmup(warmup_steps=3, after=CosineLR(T_max=5, eta_min=0.0))"


@pytest.mark.parametrize("make,exc,fragment", [
    (lambda: StepLR(0), ValueError, "step_size"),
    (lambda: StepLR(2, 0), ValueError, "gamma"),
    (lambda: StepLR(2, 1.5), ValueError, "gamma"),
    (lambda: StepLR(1.5), TypeError, "step_size"),
    (lambda: ExponentialLR(float("nan")), ValueError, "gamma"),
    (lambda: CosineLR(0), ValueError, "T_max"),
    (lambda: CosineLR(3, eta_min=-1), ValueError, "eta_min"),
    (lambda: LinearWarmup(0), ValueError, "warmup_steps"),
    (lambda: LinearWarmup(3, after=0.5), TypeError, "after"),
    (lambda: StepLR(1)(-1, 0.1), ValueError, "t must be"),
    (lambda: StepLR(1)(1.0, 0.1), TypeError, "t must be"),
    (lambda: StepLR(1)(1, -0.1), ValueError, "base_lr"),
])
def test_bad_arguments(make, exc, fragment):
    with pytest.raises(exc, match=fragment):
        make()
