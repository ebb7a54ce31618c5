#!/usr/bin/env bash
# The issue 11/12 targets on a quiet machine, into OUTDIR (BENCHMARKS.md, "Issue 11 and 12 targets").
#   benchmarks/issue_targets.sh OUTDIR      (~1-3 min; needs the in-place build and .venv; torch, numba optional)
set -u
OUT=$(realpath -m "$1"); mkdir -p "$OUT"; cd "$(dirname "$0")/.."
PY=.venv/bin/python
{ date -u; uptime; lscpu | grep -E 'Model name|CPU family|^Model:|L1d|L2|L3|Flags' | cut -c1-400; } > "$OUT/uptime_start.txt"
.venv/bin/fastopt bench --suite small --threads 1 --repeat 9 > "$OUT/small.txt" 2>&1
PYTHONPATH=benchmarks:. $PY benchmarks/optim_vs_numba.py --repeats 9 > "$OUT/numba.txt" 2>&1
PYTHONPATH=benchmarks:. $PY benchmarks/dropout_roofline.py --repeats 9 > "$OUT/dropout.txt" 2>&1
PYTHONPATH=benchmarks:. $PY benchmarks/norm_kernels_roofline.py --repeats 7 > "$OUT/norm.txt" 2>&1
PYTHONPATH=benchmarks:. $PY benchmarks/bench_optim_ratio.py --repeats 11 --rules Adam,NAdam,RAdam,SGD > "$OUT/ratio.txt" 2>&1
for t in 1 2; do .venv/bin/fastopt bench --suite mlp --threads $t --repeat 5 > "$OUT/mlp_${t}thread.txt" 2>&1; done
{ date -u; uptime; } > "$OUT/uptime_end.txt"
