#!/usr/bin/env bash
# Mutation testing of the Python layer and the NumPy twins with mutmut (config: [tool.mutmut] in
# pyproject.toml; results and the kill rate per module: MUTATION.md).
#
#   tools/mutation.sh                      every module listed in [tool.mutmut] only_mutate
#   tools/mutation.sh fastopt.reference    one module (a mutant-name prefix; several may be given)
#   tools/mutation.sh --sample 0.1 [MOD..] a seeded random 10% of the mutants of each file (an estimate)
#   tools/mutation.sh --report             print the kill rate per module of what has run so far
#
# Needs `pip install -e '.[test,mutation]'` (an in-place build: the compiled .so files are copied
# into mutants/ with the package). Results are kept in mutants/ and a rerun continues where the last
# one stopped; `rm -rf mutants` starts over. Slow: hours on 2 cores for everything (see MUTATION.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
MUTMUT=${MUTMUT:-$(dirname "$PY")/mutmut}
export FASTOPT_HYPOTHESIS_PROFILE=mutation   # derandomized, fewer examples (tests/conftest.py)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
CHILDREN=${MUTATION_CHILDREN:-2}

if [ "${1:-}" = "--report" ]; then
  exec "$PY" tools/mutation_report.py
fi
if [ "${1:-}" = "--sample" ]; then
  mapfile -t names < <("$PY" tools/mutation_report.py --sample "${@:2}")
  "$MUTMUT" run --max-children "$CHILDREN" "${names[@]}"
elif [ $# -eq 0 ]; then
  "$MUTMUT" run --max-children "$CHILDREN"
else
  patterns=()
  for module in "$@"; do patterns+=("${module}.*"); done
  "$MUTMUT" run --max-children "$CHILDREN" "${patterns[@]}"
fi
"$PY" tools/mutation_report.py
