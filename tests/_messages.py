"""Golden error messages: every `pytest.raises` block checks the exact text of fastopt's message.

`match=` is an unanchored regex search, so a message changed to "XXgamma must be ...XX", upper-cased
or emptied often still matches (most mutation survivors of seeds 1-3 were such). This plugin records,
per test and in order, the exception of each raises-block that passed (type name and str, normalized
below) and compares the list with tests/error_messages.json; a difference fails the test with a diff.

- Only messages raised by fastopt's Python code count (the traceback's innermost frame is a .py file
  of the imported fastopt package). Others (numpy, the compiled kernels, a test's own callback) are
  recorded as OUTSIDE: their wording varies with library versions and backends.
- Not checked: tests run by hypothesis (random inputs), tests marked `error_messages_vary`, and any
  run with FASTOPT_BACKEND set (the NumPy twins raise where the kernels did, in other words).
- A test with fastopt messages but no entry in the file (a new test, or one that is skipped where the
  file was last written, e.g. without torch) is not failed: it is listed at the end of the run.
- `pytest --update-error-messages [PATHS]` rewrites the entries of the tests that ran (and drops those
  of tests no longer collected from a whole file it ran), keeps the rest: review the diff, commit it.
"""
import difflib
import json
import os
import re
import tempfile
from pathlib import Path

import pytest

GOLDEN = Path(__file__).with_name("error_messages.json")
OUTSIDE = "OUTSIDE"     # a block whose exception was not raised by fastopt's Python code

_real_raises = pytest.raises
_state = {"blocks": None, "fastopt": None}


class _Recorded:
    """pytest.raises' context manager, recording the exception of a block that passed."""

    def __init__(self, cm):
        self._cm = cm

    def __getattr__(self, name):
        return getattr(self._cm, name)

    def __enter__(self):
        return self._cm.__enter__()

    def __exit__(self, *exc):
        __tracebackhide__ = True
        caught = self._cm.__exit__(*exc)
        if caught:
            _record(exc[1], exc[2])
        return caught


def raises(*args, **kwargs):
    __tracebackhide__ = True
    got = _real_raises(*args, **kwargs)
    if isinstance(got, pytest.ExceptionInfo):      # the call form raises(E, func, *args)
        _record(got.value, got.tb)
        return got
    return _Recorded(got)


def _fastopt_dir():
    if _state["fastopt"] is None:
        import fastopt
        _state["fastopt"] = os.path.dirname(os.path.realpath(fastopt.__file__)) + os.sep
    return _state["fastopt"]


def _record(exc, tb):
    blocks = _state["blocks"]
    if blocks is None:
        return
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = os.path.realpath(tb.tb_frame.f_code.co_filename) if tb is not None else ""
    if where.startswith(_fastopt_dir()) and where.endswith(".py"):
        blocks.append(f"{type(exc).__name__}: {normalize(str(exc))}")
    else:
        blocks.append(OUTSIDE)


def _replacements():
    """(text, placeholder) pairs for what differs between runs and machines, longest first."""
    pairs = [(_fastopt_dir().rstrip(os.sep), "<fastopt>"),
             (str(Path(__file__).resolve().parent.parent), "<root>"),
             (os.path.realpath(tempfile.gettempdir()), "<tmp>"), (tempfile.gettempdir(), "<tmp>")]
    return sorted({p for p in pairs if len(p[0]) > 1}, key=lambda p: -len(p[0]))


def normalize(text):
    for old, new in _replacements():
        text = text.replace(old, new)
    # pytest's tmp_path (numbered per session and per test name: a subset of the tests numbers them
    # otherwise) and tempfile.mkdtemp()'s random names: the first directory under <tmp> goes.
    text = re.sub(r"<tmp>/pytest-of-[^/]+/pytest-\d+", "<tmp>", text)
    text = re.sub(r"<tmp>/[^/\s'\"]+", "<tmp>/<dir>", text)
    text = re.sub(r"\.\d+\.[0-9a-f]{16}\.", ".<pid>.<token>.", text)       # fastopt.checkpoint's temporaries
    text = re.sub(r"0x[0-9a-fA-F]{6,}", "0x...", text)                    # object addresses in reprs
    return text.replace(f"pid {os.getpid()}", "pid <pid>")


def pytest_addoption(parser):
    parser.addoption("--update-error-messages", action="store_true",
                     help=f"rewrite the golden error messages ({GOLDEN.name}) of the test files that ran")


def pytest_configure(config):
    config.addinivalue_line("markers", "error_messages_vary: the messages of this test's raises-blocks "
                            "vary between runs; they are not checked against error_messages.json")
    if os.environ.get("FASTOPT_BACKEND"):
        return
    config._error_messages = {"golden": json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {},
                              "seen": {}, "unknown": [], "collected": set()}
    pytest.raises = raises


def pytest_unconfigure(config):
    pytest.raises = _real_raises


def pytest_collection_modifyitems(config, items):
    if hasattr(config, "_error_messages"):
        config._error_messages["collected"] = {item.nodeid for item in items}


def _checked(item):
    return (hasattr(item.config, "_error_messages") and isinstance(item, pytest.Function)
            and not getattr(item.obj, "is_hypothesis_test", False)
            and item.get_closest_marker("error_messages_vary") is None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    if not _checked(item):
        return (yield)
    _state["blocks"] = blocks = []
    try:
        result = yield
    finally:
        _state["blocks"] = None
    state = item.config._error_messages
    if all(b == OUTSIDE for b in blocks):
        blocks = []      # nothing of fastopt's to pin
    state["seen"][item.nodeid] = blocks
    want = state["golden"].get(item.nodeid)
    if item.config.getoption("update_error_messages") or (want is None and not blocks):
        return result
    if want is None:
        state["unknown"].append(item.nodeid)
    elif blocks != want:
        diff = "\n".join(difflib.unified_diff([f"[{i}] {m}" for i, m in enumerate(want)],
                                              [f"[{i}] {m}" for i, m in enumerate(blocks)],
                                              GOLDEN.name, "this run", lineterm=""))
        pytest.fail("the raises-blocks' messages differ from tests/error_messages.json (if the new "
                    "text is right, run pytest --update-error-messages on this test and commit the "
                    f"file):\n{diff}", pytrace=False)
    return result


def pytest_sessionfinish(session):
    state = getattr(session.config, "_error_messages", None)
    if state is None or not session.config.getoption("update_error_messages"):
        return
    opt = session.config.option
    # A run that selected part of a file (node ids, -k, -m, --deselect) cannot tell a removed test
    # from one it left out: then only the entries of the tests that ran are replaced.
    partial = opt.keyword or opt.markexpr or opt.deselect or any("::" in a for a in session.config.args)
    files = {nodeid.split("::")[0] for nodeid in state["collected"]}
    kept = {k: v for k, v in state["golden"].items() if k not in state["seen"]
            and (partial or k.split("::")[0] not in files or k in state["collected"])}
    kept.update({k: v for k, v in state["seen"].items() if v})
    GOLDEN.write_text(json.dumps(dict(sorted(kept.items())), indent=1, ensure_ascii=False) + "\n")


def pytest_terminal_summary(terminalreporter, config):
    state = getattr(config, "_error_messages", None)
    if state and state["unknown"]:
        terminalreporter.write_line(
            f"{len(state['unknown'])} tests raise fastopt messages that {GOLDEN.name} does not hold "
            "(not checked; run `pytest --update-error-messages` on them and review the diff):")
        for nodeid in state["unknown"]:
            terminalreporter.write_line(f"  {nodeid}")
    if config.getoption("update_error_messages", False) and state is not None:
        terminalreporter.write_line(f"wrote {GOLDEN}")
