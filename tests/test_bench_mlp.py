"""The mlp suite of `fastopt bench`: a quick run gives one row per dtype with positive times."""
import json

import numpy as np

from fastopt import cli
from fastopt.bench import mlp
from fastopt.bench.cases import SuiteConfig


def test_quick_mlp_suite_rows(tmp_path):
    path = tmp_path / "mlp.json"
    code = cli.main(["bench", "--quick", "--suite", "mlp", "--no-torch", "--repeat", "2",
                     "--dtype", "float32", "--json", str(path)])
    assert code == 0
    rows = json.loads(path.read_text())["rows"]
    assert [r["kernel"] for r in rows] == ["mlp train step", "bias_relu_forward", "relu_bias_backward",
                                           "batchnorm_relu_forward", "relu_batchnorm_backward"]
    for kernel_row in rows[1:]:       # each fused kernel with its stream-loop roofline
        assert kernel_row["roofline_fraction"] > 0 and kernel_row["size"] == f"{mlp.BATCH_QUICK}x128"
        assert kernel_row["numpy_median_s"] > 0
    row = rows[0]
    assert row["gemms"]["median_s"] > 0 and row["gemms_ratio_median"] > 0   # the step's share in GEMMs
    assert row["suite"] == "mlp" and row["kernel"] == "mlp train step" and row["dtype"] == "float32"
    assert row["fastopt_s"] > 0 and row["numpy_s"] > 0 and row["torch_s"] is None
    assert row["note_batch"] == mlp.BATCH_QUICK


def test_fastopt_and_numpy_steps_agree():
    """Both callables train the same model from the same start: equal losses to float32 precision."""
    config = SuiteConfig(quick=True, dtypes=("float64",))
    case = next(mlp.cases(config))
    import fastopt
    losses = []
    for step, backend in ((case.fastopt, "cython"), (case.numpy, "numpy")):
        fastopt.set_backend(backend)
        for _ in range(2):
            step()
        X, y, _ = mlp.make_problem(mlp.BATCH_QUICK, mlp.DIMS_QUICK, dtype=np.float64)
        losses.append(step.model.loss(X, y)[0])
    assert np.isclose(losses[0], losses[1], rtol=1e-10)


def test_torch_gemms_compute_numpys_products_on_the_same_memory():
    """The 'torch gemms' row runs the step's matmuls through torch on the very arrays NumPy's row
    uses: the same products (to float32 BLAS rounding), written into the same outputs."""
    import pytest
    pytest.importorskip("torch")
    problem = mlp.make_problem(mlp.BATCH_QUICK, mlp.DIMS_QUICK)
    step = mlp.build_fastopt_step(problem, mlp.DIMS_QUICK)
    ops = mlp._gemm_operands(step, problem)
    assert len(ops) == 3 * len(mlp.DIMS_QUICK) - 4     # per layer: forward, dW; per hidden layer: dh
    mlp.gemms_of_step(step, problem)()
    by_numpy = [out.copy() for _, _, out in ops]
    for _, _, out in ops:
        out.fill(np.nan)
    mlp.torch_gemms_of_step(step, problem)()
    for (a, b, out), want in zip(ops, by_numpy):
        np.testing.assert_allclose(out, a @ b, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
