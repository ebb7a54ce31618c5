"""fastopt._blas: NumPy's BLAS thread count through threadpoolctl, checked against threadpoolctl's own
independent view of the process (threadpool_info), and the fallbacks when no BLAS can be controlled."""
import numpy as np
import pytest

threadpoolctl = pytest.importorskip("threadpoolctl")

from fastopt import _blas  # noqa: E402


def _numpys_blas_info():
    """threadpoolctl's record of NumPy's BLAS, found by a fresh scan (not fastopt's cached one)."""
    lib = _blas.blas_library()
    if lib is None:
        pytest.skip("no controllable BLAS is loaded (NumPy's BLAS is neither OpenBLAS, MKL nor BLIS)")
    matches = [i for i in threadpoolctl.threadpool_info() if i["filepath"] == lib["filepath"]]
    assert len(matches) == 1, matches
    return matches[0]


def test_the_library_is_numpys():
    info = _numpys_blas_info()
    assert info["user_api"] == "blas"
    if np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"].startswith("scipy-openblas"):
        assert "numpy" in info["filepath"] and info["internal_api"] == "openblas", info


def test_count_matches_threadpoolctl():
    assert _blas.blas_num_threads() == _numpys_blas_info()["num_threads"]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_limit_sets_and_restores(n):
    before = _blas.blas_num_threads()
    _numpys_blas_info()
    with _blas.limit_blas_threads(n):
        assert _blas.blas_num_threads() == n
        assert _numpys_blas_info()["num_threads"] == n       # seen by threadpoolctl's own scan
        a = np.ones((64, 64))
        assert (a @ a == 64).all()                           # BLAS still computes in the block
    assert _blas.blas_num_threads() == before
    assert _numpys_blas_info()["num_threads"] == before


def test_limits_nest_and_restore_after_an_error():
    before = _blas.blas_num_threads()
    _numpys_blas_info()
    with pytest.raises(RuntimeError, match="inside"):
        with _blas.limit_blas_threads(2):
            with _blas.limit_blas_threads(1):
                assert _blas.blas_num_threads() == 1
                raise RuntimeError("inside")
    assert _blas.blas_num_threads() == before


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError),
                                        ("2", TypeError), (None, TypeError), (True, TypeError)])
def test_bad_thread_counts_are_refused_before_anything_changes(bad, error):
    before = _blas.blas_num_threads()
    with pytest.raises(error, match="n must be"):
        with _blas.limit_blas_threads(bad):
            pass
    assert _blas.blas_num_threads() == before


def test_no_controllable_blas(monkeypatch):
    monkeypatch.setitem(_blas._found, "lib", None)
    assert _blas.blas_num_threads() is None
    assert _blas.blas_library() is None
    with _blas.limit_blas_threads(1):          # a no-op, not an error
        assert _blas.blas_num_threads() is None


class _FakeLib:
    def __init__(self, filepath):
        self.filepath = filepath


def test_numpys_blas_is_told_from_other_loaded_ones_by_its_path():
    inside = _FakeLib(_blas._NUMPY_DIR + "/numpy.libs/libscipy_openblas64_-x.so")
    torch_mkl = _FakeLib(_blas._NUMPY_DIR + "/torch/lib/libmkl_rt.so")
    system = _FakeLib("/usr/lib/x86_64-linux-gnu/libopenblas.so.0")
    assert _blas._is_numpys(inside)
    assert not _blas._is_numpys(torch_mkl) and not _blas._is_numpys(system)
