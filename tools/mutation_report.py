"""Kill rate per file and per module from mutmut's result files (mutants/**/*.py.meta), as Markdown.

Killed: a test failed under the mutant. Timeout: the covering tests ran out of their CPU-time limit
(or crashed) under the mutant; counted as killed, and listed apart. Error: mutmut's worker could not
run the tests at all (exit code -1, which mutmut files as "timeout": e.g. a test id pytest cannot
select, or a collection that fails because the mutant breaks `import fastopt`); no verdict, counted
as not run. Survived: every covering test passed. No tests: no test
reaches the mutated function. Not checked: not run (the run was limited or sampled).
Rate = (killed + timeout) / (killed + timeout + survived + no tests), over the mutants that ran.
When only part of a file ran (a --sample run), "95% CI" is the Wilson score interval of its kill
rate, read as a binomial estimate from that random sample ("exact" when every mutant ran).

The module is also a pytest plugin for mutmut's stats phase (see the section at the end).
"""
import json
import os
import math
import sys
from collections import Counter
from pathlib import Path

KILLED, TIMEOUT = {1, 3}, {36, -24, 24, 152, -11, -9}   # mutmut's exit codes
ERROR = {255, -1}
SURVIVED, NO_TESTS = {0}, {5, 33}


def classify(code):
    if code is None:
        return "not checked"
    for kind, codes in (("killed", KILLED), ("timeout", TIMEOUT), ("error", ERROR),
                        ("survived", SURVIVED), ("no tests", NO_TESTS)):
        if code in codes:
            return kind
    return "other"


def wilson(dead, run, z=1.96):
    """The Wilson score interval (lo, hi) of a binomial proportion dead/run, run > 0."""
    p = dead / run
    centre = (p + z * z / (2 * run)) / (1 + z * z / run)
    half = z * math.sqrt(p * (1 - p) / run + z * z / (4 * run * run)) / (1 + z * z / run)
    return max(0.0, centre - half), min(1.0, centre + half)


def _table(rows):
    print("| module | mutants | killed | timeout | survived | no tests | error | not checked | kill rate | 95% CI |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for module, c in rows:
        dead = c["killed"] + c["timeout"]
        run = dead + c["survived"] + c["no tests"]
        unrun = c["not checked"] + c["other"] + c["error"]
        rate = f"{100 * dead / run:.1f}%" if run else "-"
        if not run:
            ci = "-"
        elif not unrun:
            ci = "exact"
        else:
            lo, hi = wilson(dead, run)
            ci = f"{100 * lo:.0f}-{100 * hi:.0f}%"
        print(f"| {module} | {sum(c.values())} | {c['killed']} | {c['timeout']} | {c['survived']} | "
              f"{c['no tests']} | {c['error']} | {c['not checked'] + c['other']} | {rate} | {ci} |")


def main(root="mutants"):
    rows, survivors, total, packages = [], [], Counter(), {}
    for meta in sorted(Path(root).rglob("*.py.meta")):
        module = str(meta.relative_to(root))[:-len(".meta")]
        data = json.loads(meta.read_text())
        counts = Counter()
        for name, code in data.get("exit_code_by_key", {}).items():
            kind = classify(code)
            counts[kind] += 1
            if kind in ("survived", "no tests", "error"):
                survivors.append((module, name, kind))
        if not counts:
            continue
        total.update(counts)
        rows.append((module, counts))
        package = "/".join(module.split("/")[:2])          # fastopt/optim, fastopt/checkpoint.py
        packages.setdefault(package, Counter()).update(counts)
    print("Per module:\n")
    _table(sorted(packages.items()) + [("**all**", total)])
    print("\nPer file:\n")
    _table(rows)
    if survivors:
        print("\nsurvivors, no tests and errors (`mutmut show NAME` prints the diff):")
        for module, name, kind in survivors:
            print(f"- {name} ({kind})")


def sample(fraction, *prefixes, root="mutants", seed=0):
    """Print a seeded random `fraction` of the mutant names of each file under the given module
    prefixes (all modules when none): a kill-rate estimate where the full run takes too long."""
    import random
    rng = random.Random(seed)
    for meta in sorted(Path(root).rglob("*.py.meta")):
        names = sorted(json.loads(meta.read_text()).get("exit_code_by_key", {}))
        names = [n for n in names if not prefixes or n.startswith(prefixes)]
        if names:
            k = max(1, round(fraction * len(names)))
            print("\n".join(sorted(rng.sample(names, k))))


# --- pytest plugin for mutmut's own pytest runs ([tool.mutmut] pytest_add_cli_args: -p tools.mutation_report).
# In the stats phase mutmut files every function hit between two tests under the next test to finish.
# Code that runs while the package is imported (optim._classes._make_all, functional.make_function, the
# Hyper tables in _declarations, layers.activations._make_layer_functions) is hit once, during
# collection, so all of it was filed under the first test alone and its mutants ran that one test.
# Whatever ran at collection shapes every test: file it under each of them.
_hit_at_collection = set()


def _mutmut_hits():
    """mutmut's set of functions hit since the last test, or None outside its stats phase."""
    try:
        from mutmut.mutation.trampoline import get_mutant_under_test
        from mutmut.state import state
    except ImportError:
        return None
    return state()._stats if get_mutant_under_test() == "stats" else None


def pytest_collection_finish(session):
    hits = _mutmut_hits()
    if hits is not None:
        _hit_at_collection.update(hits)


def pytest_runtest_setup(item):
    hits = _mutmut_hits()
    if hits is not None:
        hits.update(_hit_at_collection)


def _fates(section, doc="MUTATION.md"):
    """{mutant name: class letter} from the survivors table of the MUTATION.md section whose title
    holds `section`: rows "| `name` ... | change | K: ..." (K killed by a new test, E equivalent, M
    missing, A not activated)."""
    import re
    text = Path(doc).read_text()
    start = next(m.end() for m in re.finditer(r"^## .*$", text, re.M) if section in m.group(0))
    end = re.search(r"^## ", text[start:], re.M)
    body = text[start:start + end.start()] if end else text[start:]
    row = re.compile(r"^\| `([^`]+)`[^|]*\|[^|]*\| (K|E|M|A)\b", re.M)
    return {"fastopt." + name: fate for name, fate in row.findall(body)}


def _rate(dead, run):
    if not run:
        return "-", "-"
    lo, hi = wilson(dead, run)
    return f"{dead}/{run} = {100 * dead / run:.1f}%", f"{100 * lo:.0f}-{100 * hi:.0f}%"


def _verdict(dead, run):
    lo, hi = wilson(dead, run)
    if lo >= 0.9:
        return "**holds** (the interval lies above 90%)"
    if hi < 0.9:
        return "**fails** (the interval lies below 90%)"
    return ("point estimate meets it, **not established**" if dead / run >= 0.9
            else "point estimate **below** it, not established")


def corrected(section, doc="MUTATION.md", root="mutants"):
    """The corrected table of a sample (E survivors left out of the denominator, K counted as killed)
    and the goal lines, from mutants/ and the fates in the survivors table of `section` of `doc`."""
    fates = _fates(section, doc)
    rows, total = [], Counter()
    seen = set()
    for meta in sorted(Path(root).rglob("*.py.meta")):
        package = "/".join(str(meta.relative_to(root))[:-len(".meta")].split("/")[:2])
        for name, code in json.loads(meta.read_text()).get("exit_code_by_key", {}).items():
            kind = classify(code)
            if kind not in ("killed", "timeout", "survived", "no tests"):
                continue
            c = Counter(run=1, dead=int(kind in ("killed", "timeout")))
            if kind in ("survived", "no tests"):
                fate = fates.get(name, "M")
                seen.add(name)
                c.update(E=int(fate == "E"), K=int(fate in ("K", "A")))
            rows.append((package, c))
    by = {}
    for package, c in rows:
        by.setdefault(package, Counter()).update(c)
        total.update(c)
    unknown = sorted(set(fates) - seen)
    print("| module | ran | killed (recorded) | rate as recorded | 95% CI | E left out | 95% CI | "
          "with the K of this section | 95% CI |")
    print("|---|---|---|---|---|---|---|---|---|")
    lines = []
    for package, c in sorted(by.items()) + [("**all**", total)]:
        rec, rec_ci = _rate(c["dead"], c["run"])
        e, e_ci = _rate(c["dead"], c["run"] - c["E"])
        k, k_ci = _rate(c["dead"] + c["K"], c["run"] - c["E"])
        print(f"| {package} | {c['run']} | {c['dead']} | {rec.split(' = ')[1]} | {rec_ci} | {e} | {e_ci} | {k} | {k_ci} |")
        lines.append(f"- `{package}`: as recorded {rec.split(' = ')[1]} ({rec_ci}): {_verdict(c['dead'], c['run'])}; "
                     f"E left out {e.split(' = ')[1]} ({e_ci}): {_verdict(c['dead'], c['run'] - c['E'])}; "
                     f"with the K {k.split(' = ')[1]} ({k_ci}): {_verdict(c['dead'] + c['K'], c['run'] - c['E'])}.")
    print("\n" + "\n".join(lines))
    if unknown:
        print(f"\n(fates given for mutants that have no survivor verdict in {root}/: {', '.join(unknown)})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--corrected"]:
        # tools/mutation_report.py --corrected "seed 3": the corrected table of that MUTATION.md section.
        corrected(*sys.argv[2:])
    elif sys.argv[1:2] == ["--sample"]:
        # MUTATION_SEED picks another sample: a fresh estimate, independent of tests written for the last one.
        sample(float(sys.argv[2]), *sys.argv[3:], seed=int(os.environ.get("MUTATION_SEED", "0")))
    else:
        main(*sys.argv[1:])
