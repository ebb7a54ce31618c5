"""Check by hand that tests kill a mutant: apply its diff (from `mutmut show NAME`) to a scratch copy
of the package, run the tests there (they must fail), then on the real package (they must pass).

    .venv/bin/python tools/mutation_verify.py NAME TEST [TEST ...]

Needs a mutants/ tree that holds NAME (a generation, see MUTATION.md) and the in-place build (the
scratch copy takes the compiled .so files along). mutmut shows a method's diff dedented: the hunk is
matched in the source at any indentation, and must match exactly once. Exit status 0 when the mutant
is killed and the tests pass on the real package, 1 otherwise.
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def mutant_diff(name):
    """(file path, hunk lines with their ' ', '-', '+' prefixes) of `mutmut show NAME`."""
    out = subprocess.run([str(BIN / "mutmut"), "show", name], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    lines = out.splitlines()
    path = next(line[4:] for line in lines if line.startswith("--- "))
    return path, [line for line in lines[lines.index(f"+++ {path}") + 1:] if not line.startswith("@@")]


def _indent(line):
    return len(line) - len(line.lstrip())


def apply(source, hunk):
    """`source` (a list of lines) with the hunk applied where its old lines (context and '-', compared
    without their indentation: mutmut dedents a method but not its continuation lines) occur, once.
    An added line gets the indentation the removed line before it has in the source."""
    old = [line[1:].strip() for line in hunk if line[:1] in (" ", "-")]
    hits = [i for i in range(len(source) - len(old) + 1)
            if all(source[i + j].strip() == o for j, o in enumerate(old))]
    if len(hits) != 1:
        raise SystemExit(f"the mutant's hunk matches {len(hits)} places of the source, not one")
    out, i, shift = source[:hits[0]], hits[0], ""
    for line in hunk:
        kind, text = line[:1], line[1:]
        if kind in (" ", "-"):
            here = source[i]
            shift = " " * max(0, _indent(here) - _indent(text))
            if kind == " ":
                out.append(here)
            i += 1
        elif kind == "+":
            out.append(shift + text)
    return out + source[i:]


def run(tests, pythonpath=None):
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    probe = subprocess.run([str(BIN / "python"), "-c", "import fastopt; print(fastopt.__file__)"],
                           cwd=ROOT / "tests", env=env, capture_output=True, text=True)
    if probe.returncode:        # a mutant of import-time code: every test fails at collection
        return pythonpath or str(ROOT), probe.returncode, ["import fastopt fails: " + probe.stderr.strip().splitlines()[-1]]
    where = probe.stdout.strip()
    proc = subprocess.run([str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", "-x", *tests], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    out = proc.stdout.strip().splitlines()
    return where, proc.returncode, [line for line in out if line.startswith("E ")][:1] + out[-1:]


def main(name, *tests):
    path, hunk = mutant_diff(name)
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        shutil.copytree(ROOT / "fastopt", Path(tmp) / "fastopt", ignore=shutil.ignore_patterns("__pycache__"))
        target = Path(tmp) / path
        lines = target.read_text().split("\n")
        target.write_text("\n".join(apply(lines, hunk)))
        where, mutated, tail = run(tests, tmp)
        assert where.startswith(tmp), f"the scratch copy was not imported: {where}"
        print(f"{name}: under the mutant ({where}): exit {mutated} {tail}")
    where, real, tail = run(tests)
    print(f"{name}: on the real package ({where}): exit {real} {tail}")
    killed = mutated != 0 and real == 0
    print(f"{name}: {'KILLED' if killed else 'NOT KILLED'} by {' '.join(tests)}")
    return 0 if killed else 1


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    sys.exit(main(*sys.argv[1:]))
