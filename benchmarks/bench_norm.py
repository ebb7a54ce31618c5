"""batchnorm / layernorm / spatial batchnorm: forward, backward, forward+backward x shape x dtype x
implementation (one group each)."""
from fastopt.bench import DTYPES, suites
from fastopt.bench.report import IMPLS


def pytest_generate_tests(metafunc):
    shapes = suites.NORM_SHAPES_QUICK if metafunc.config.getoption("fastopt_quick") else suites.NORM_SHAPES
    dtypes = DTYPES[metafunc.config.getoption("fastopt_dtype")]
    params = [(k, s, d, p) for k, kernel_shapes in shapes.items() for s in kernel_shapes
              for d in dtypes for p in suites.NORM_PASSES]
    metafunc.parametrize("kernel, shape, dtype, part", params,
                         ids=[f"{k.replace(' ', '_')}-{p}-{'x'.join(map(str, s))}-{d}" for k, s, d, p in params])
    metafunc.parametrize("impl", IMPLS)


def test_norm(time_case, kernel, shape, dtype, part, impl):
    time_case(lambda torch: suites.make_norm_case(kernel, shape, dtype, part, torch=torch), impl)
