#!/usr/bin/env bash
# Regenerates every committed demo report (reports/<suite>.md and its figures) and the nightly
# baseline (ci/baselines/demo.parquet) from an empty results folder, printing each suite's time.
# Run it, on idle cores, whenever a change moves the numbers (arithmetic, a default, a data
# generator), and commit the reports with the change; then `ci/readme-tables.py` copies the new
# tables into the README (prose numbers, timings and pretraining results are edited by hand).
#
#   ci/regenerate-reports.sh                      # every demo suite
#   SUITES="demo demo-cl" ci/regenerate-reports.sh
#
# minilm-rerank (reports/minilm-rerank.md) needs the all-MiniLM-L6-v2 package in a venv and is run
# by hand as the README says.
set -euo pipefail
cd "$(dirname "$0")/.."

suites=${SUITES:-demo demo-zoo demo-zoo-b demo-text demo-audio demo-multitask demo-vl demo-clip-retrieval demo-cl demo-music demo-rerank}
results=${RESULTS:-target/regenerate-reports/results}
# A cache of its own, emptied first: every demo backbone is pretrained by this build, as on a new
# user's machine, and the printed times are cold times.
export PEFTBENCH_CACHE=${PEFTBENCH_CACHE:-$PWD/target/regenerate-reports/cache}

# demo-audio speaks its keywords with espeak-ng and falls back to tone glides without it: the
# committed report is the spoken one.
if [[ " $suites " == *" demo-audio "* ]] && ! command -v espeak-ng >/dev/null; then
  echo "espeak-ng is not installed (Debian: apt install espeak-ng): demo-audio would run on tone glides" >&2
  exit 2
fi

cargo build --release --locked -p harness
harness=target/release/harness
rm -rf "$results" "$PEFTBENCH_CACHE" target/regenerate-reports/nightly
mkdir -p "$results"
for suite in $suites; do
  start=$(date +%s)
  "$harness" suite "$suite" --results "$results" --reports reports
  echo "suite $suite: $(( $(date +%s) - start )) s" | tee -a "$results/../timings.txt"
done
if [[ " $suites " == *" demo "* ]]; then
  NIGHTLY_OUT=target/regenerate-reports/nightly ci/nightly.sh --update-baseline
fi
