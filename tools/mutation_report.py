"""Kill rate per module from mutmut's result files (mutants/**/*.py.meta), as a Markdown table.

Killed: a test failed under the mutant. Timeout: the covering tests ran out of their CPU-time
limit (or crashed) under the mutant; counted as killed, and listed apart. Survived: every covering test passed.
No tests: no test reaches the mutated function. Not checked: not run yet (the run was limited).
Rate = (killed + timeout) / (killed + timeout + survived + no tests), over the mutants that ran.
"""
import json
import sys
from collections import Counter
from pathlib import Path

KILLED, TIMEOUT = {1, 3}, {36, -24, 24, 152, 255, -11, -9}   # mutmut's exit codes
SURVIVED, NO_TESTS = {0}, {5, 33}


def classify(code):
    if code is None:
        return "not checked"
    if code in KILLED:
        return "killed"
    if code in TIMEOUT:
        return "timeout"
    if code in SURVIVED:
        return "survived"
    if code in NO_TESTS:
        return "no tests"
    return "other"


def main(root="mutants"):
    rows, survivors, total = [], [], Counter()
    for meta in sorted(Path(root).rglob("*.py.meta")):
        module = str(meta.relative_to(root))[:-len(".meta")]
        data = json.loads(meta.read_text())
        counts = Counter()
        for name, code in data.get("exit_code_by_key", {}).items():
            kind = classify(code)
            counts[kind] += 1
            if kind in ("survived", "no tests"):
                survivors.append((module, name, kind))
        total.update(counts)
        rows.append((module, counts))
    print("| module | mutants | killed | timeout | survived | no tests | not checked | kill rate |")
    print("|---|---|---|---|---|---|---|---|")
    for module, c in rows + [("**all**", total)]:
        dead = c["killed"] + c["timeout"]
        run = dead + c["survived"] + c["no tests"]
        rate = f"{100 * dead / run:.1f}%" if run else "-"
        print(f"| {module} | {sum(c.values())} | {c['killed']} | {c['timeout']} | {c['survived']} | "
              f"{c['no tests']} | {c['not checked'] + c['other']} | {rate} |")
    if survivors:
        print("\nsurvivors (`mutmut show NAME` prints the diff):")
        for module, name, kind in survivors:
            print(f"- {name} ({kind})")


if __name__ == "__main__":
    main(*sys.argv[1:])
