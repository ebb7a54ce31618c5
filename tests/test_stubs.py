"""Packaging contracts: the .pyi stubs of the compiled modules cannot drift from the modules (every
public function with the same parameters, in order, with the same defaults), py.typed is there, and
the version is defined in one place (fastopt/_version.py) that the metadata and fastopt agree on."""
import ast
import importlib
import importlib.metadata
import inspect
import sys
from pathlib import Path

import pytest

import fastopt
from fastopt import _version

ROOT = Path(__file__).resolve().parent.parent
PKG = Path(fastopt.__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tools"))
import gen_stubs  # noqa: E402

MODULES = gen_stubs.module_names()


def test_every_compiled_module_is_found():
    assert {"_optim_kernels", "_norm_kernels", "_mlp_kernels", "_dropout_kernels", "_openmp"} <= set(MODULES)


def stub_names(stub_text):
    """(functions, public constants) a stub declares, following `from .other import *` re-exports."""
    tree = ast.parse(stub_text)
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    consts = {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign) and not n.target.id.startswith("_")}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and [a.name for a in node.names] == ["*"]:
            more_funcs, more_consts = stub_names((PKG / f"{node.module}.pyi").read_text())
            funcs.update(more_funcs)
            consts |= more_consts
    return funcs, consts


def mismatches(module, stub_text):
    """How a stub differs from a compiled module: missing/extra names, parameters or defaults."""
    stub_funcs, stub_consts = stub_names(stub_text)
    funcs, consts = gen_stubs.public_members(module)
    problems = [f"{n}: not in the stub" for n in sorted(set(funcs) - set(stub_funcs))]
    problems += [f"{n}: in the stub only" for n in sorted(set(stub_funcs) - set(funcs))]
    problems += [f"constant {n}: differs" for n in sorted(stub_consts ^ set(consts))]
    for fn in sorted(set(funcs) & set(stub_funcs)):
        actual = [(p.name, p.default is not inspect.Parameter.empty)
                  for p in inspect.signature(funcs[fn]).parameters.values()]
        args = stub_funcs[fn].args
        n_plain = len(args.args) - len(args.defaults)
        in_stub = [(a.arg, i >= n_plain) for i, a in enumerate(args.args)]
        if in_stub != actual:
            problems.append(f"{fn}: stub (name, has default) {in_stub} != module {actual}")
    return problems


@pytest.mark.parametrize("name", MODULES)
def test_stub_matches_the_compiled_module(name):
    try:
        module = importlib.import_module(f"fastopt.{name}")
    except ImportError:
        pytest.skip(f"fastopt.{name} is not built here (e.g. FASTOPT_NO_AVX2=1) or this CPU cannot run it")
    path = PKG / f"{name}.pyi"
    assert path.exists(), f"{path} is missing: run python tools/gen_stubs.py"
    assert mismatches(module, path.read_text()) == [], "stale stub: run python tools/gen_stubs.py"


def test_the_comparison_catches_drift():
    from fastopt import _mlp_kernels as module
    good = (PKG / "_mlp_kernels.pyi").read_text()
    assert mismatches(module, good) == []
    renamed = good.replace("def bias_grad(dout:", "def bias_grad(grad_out:")
    no_default = good.replace("db: _Floating, n_threads: int = ...) -> None: ...\ndef bias_relu",
                              "db: _Floating, n_threads: int) -> None: ...\ndef bias_relu")
    dropped = "\n".join(line for line in good.splitlines() if not line.startswith("def bias_grad("))
    extra = good + "def bias_gradient(x: Any) -> None: ...\n"
    for bad, expected in ((renamed, "bias_grad: stub"), (no_default, "bias_grad: stub"),
                          (dropped, "bias_grad: not in the stub"), (extra, "bias_gradient: in the stub only"),
                          (good.replace("GRAIN: int", ""), "constant GRAIN")):
        assert bad != good
        problems = mismatches(module, bad)
        assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_the_comparison_catches_drift_in_a_not_none_kernel():
    # The optimizer kernels declare `floating[::1] param not None`: a renamed or dropped state
    # array there must fail too (lion_step: the newest rule's kernel).
    from fastopt import _optim_kernels as module
    good = (PKG / "_optim_kernels.pyi").read_text()
    assert mismatches(module, good) == []
    renamed = good.replace("def lion_step(param: _Floating, grad: _Floating, exp_avg:",
                           "def lion_step(param: _Floating, grad: _Floating, momentum:")
    dropped = "\n".join(line for line in good.splitlines() if not line.startswith("def lion_step("))
    for bad, expected in ((renamed, "lion_step: stub"), (dropped, "lion_step: not in the stub")):
        assert bad != good
        problems = mismatches(module, bad)
        assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_the_generator_reports_no_stale_stub(capsys):
    # `tools/gen_stubs.py --check`: every stub is exactly what the generator writes now (types too).
    assert gen_stubs.main(["--check"]) == 0, capsys.readouterr().err


def test_a_simd_variant_reexports_its_baseline_stub():
    assert gen_stubs.variant_of("_optim_kernels_avx2") == "_optim_kernels"
    assert gen_stubs.variant_of("_optim_kernels") is None and gen_stubs.variant_of("_openmp") is None
    assert "from ._optim_kernels import *" in (PKG / "_optim_kernels_avx2.pyi").read_text()


def test_types_come_from_the_pyx_declarations():
    types, ret = gen_stubs.declared_types("_dropout_kernels")["dropout_apply"]
    assert types == {"x": "_Floating", "mask": "npt.NDArray[np.uint8]", "scale": "float",
                     "out": "_Floating", "n_threads": "int"}
    assert ret == "None"
    # `not None` after a memoryview parameter (the optimizer, activation and L-BFGS kernels).
    types, ret = gen_stubs.declared_types("_optim_kernels")["lion_step"]
    assert types["param"] == types["grad"] == types["exp_avg"] == "_Floating"
    assert types["maximize"] == "bool" and types["n_threads"] == "int" and ret == "None"
    types, _ = gen_stubs.declared_types("_augment_kernels")["augment_batch"]
    assert types["dy"] == types["partner"] == "npt.NDArray[np.int64]" and types["flip"] == "npt.NDArray[np.uint8]"
    assert gen_stubs.python_type("const floating[:, ::1]") == "_Floating"
    assert gen_stubs.python_type("bint") == "bool" and gen_stubs.python_type("") == "Any"


def test_py_typed_marks_the_package():
    assert (PKG / "py.typed").exists()


def test_version_is_defined_once():
    tomllib = pytest.importorskip("tomllib")      # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fastopt._version.__version__"}
    assert fastopt.__version__ == _version.__version__
    try:
        installed = importlib.metadata.version("fastopt")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("fastopt is imported from the source tree without being installed")
    assert installed == _version.__version__
