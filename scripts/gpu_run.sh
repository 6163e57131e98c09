#!/usr/bin/env bash
# The one command for the H200 machine: install the GPU kit, make seqbench importable without
# installing it, and run scripts/gpu_reference.py within a total budget.
#
#   cp -r ../shared/gpu-kit .whl                       # once, here (.whl/ is git-ignored)
#   device run:  command "bash scripts/gpu_run.sh"  carry [".whl"]  timeout_s 500
#
# Everything comes back under $OUT (the device tool returns at most 8 files, 2 folders down):
#   rows.jsonl  summary.json  summary.md  env.json  log.txt  h200-run.tar.gz (the suite's run directory)
# Scratch that a rerun on the same (still warm) machine reuses stays in build/: the Triton cache,
# a rebuilt selective_scan_ops.so, and build/gpuref/h200 (a cut-off suite is resumed, not restarted).
#
# Environment: BUDGET_S (default 420: leaves device time for a second command), EXTRA (more
# arguments, e.g. EXTRA="--sections env,modern" for the modern families alone), PYTEST=1 (then
# also run tests/test_cuda.py's CUDA tests) and SEQBENCH_SOURCE_SHA (recorded in summary.json; the
# device copy of the tree has no .git).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/build/gpuref-out}
mkdir -p "$OUT" build/gpuref
LOG=$OUT/log.txt
say() { echo "gpu_run: $*" | tee -a "$LOG"; }

if [ ! -d .whl/ssops ]; then
  say "no .whl/ssops: copy ../shared/gpu-kit to .whl/ on the development machine and carry .whl"
  exit 2
fi
t0=$(date +%s)
# The kit's wheels (pure Python; --no-deps: their Requires-Dist is not needed for Mamba-1/2 or fla).
if ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl >>"$LOG" 2>&1; then
  say "pip install of .whl/*.whl failed (see $LOG)"
  exit 3
fi
# seqbench's package-dir mapping (seqbench.bench -> bench/, seqbench.models -> models/, seqbench.tasks -> tasks/)
# rebuilt as links, so nothing is installed into the image's Python.
SB=/tmp/seqbench-src
rm -rf "$SB" && mkdir -p "$SB/seqbench"
for f in seqbench/*.py; do ln -s "$ROOT/$f" "$SB/seqbench/"; done
for d in bench models tasks; do ln -s "$ROOT/$d" "$SB/seqbench/$d"; done
export PYTHONPATH=/tmp/site:$ROOT/.whl/ssops:$SB${PYTHONPATH:+:$PYTHONPATH}
export TRITON_CACHE_DIR=$ROOT/build/triton_cache PYTHONUNBUFFERED=1
# A selective_scan_ops.so rebuilt by an earlier command on this machine (--rebuild) replaces the kit's.
if [ -f build/selective_scan_ops/selective_scan_ops.so ]; then
  export SELECTIVE_SCAN_OPS_SO=$ROOT/build/selective_scan_ops/selective_scan_ops.so
fi
say "kit installed and seqbench linked in $(( $(date +%s) - t0 )) s; python3 is $(command -v python3)"

# shellcheck disable=SC2086  # EXTRA is a list of arguments
python3 scripts/gpu_reference.py --out "$OUT" --work build/gpuref --suite-out build/gpuref/h200 \
  --budget-s "${BUDGET_S:-420}" --rebuild --kit .whl ${EXTRA:-} 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
say "gpu_reference.py exited $rc after $(( $(date +%s) - t0 )) s"
if [ "${PYTEST:-0}" = 1 ]; then  # the CUDA tests of tests/test_cuda.py (about a minute), the CPU rehearsal left out
  timeout 240 python3 -m pytest -q -rs tests/test_cuda.py -k "not dry_run" 2>&1 | tail -25 | tee -a "$LOG"
fi
ls -la "$OUT" | tee -a "$LOG"
exit "$rc"
