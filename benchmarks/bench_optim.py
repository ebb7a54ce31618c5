"""One public `opt.step(grads)` per call: kernel x size x dtype x implementation (one group each)."""
from fastopt.bench import DTYPES, suites
from fastopt.bench.report import IMPLS


def pytest_generate_tests(metafunc):
    sizes = suites.OPTIM_SIZES_QUICK if metafunc.config.getoption("fastopt_quick") else suites.OPTIM_SIZES
    dtypes = DTYPES[metafunc.config.getoption("fastopt_dtype")]
    params = [(k, n, d) for k in suites.OPTIMIZERS for n in sizes for d in dtypes]
    metafunc.parametrize("kernel, n, dtype", params,
                         ids=[f"{k}-{suites.size_label(n)}-{d}" for k, n, d in params])
    metafunc.parametrize("impl", IMPLS)


def test_optim_step(time_case, kernel, n, dtype, impl):
    time_case(lambda torch: suites.make_optim_case(kernel, n, dtype, torch=torch), impl)
