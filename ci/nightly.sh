#!/usr/bin/env bash
# Nightly regression run: runs the nightly suites, writes their leaderboards and Parquet exports
# under $NIGHTLY_OUT, compares each with ci/baselines/<suite>.parquet and fails on a regression.
#
#   ci/nightly.sh                    # exit 0 ok, 1 regression, 2 error
#   ci/nightly.sh --update-baseline  # after an intended change: copy the new exports over the baselines
#
# Environment: NIGHTLY_SUITES (default "demo"), NIGHTLY_DEVICE (default cpu; cuda on the GPU runner),
# NIGHTLY_ARGS (`harness suite` flags that change the runs, also given to `harness report`: only
# --epochs, --limit, --override; default "--epochs 2 --limit 128", the configuration of the shipped
# baseline), NIGHTLY_OUT (default nightly), CARGO_FEATURES (e.g. cuda).
set -euo pipefail
cd "$(dirname "$0")/.."

update=0
if [[ "${1:-}" == "--update-baseline" ]]; then update=1; fi

suites=${NIGHTLY_SUITES:-demo}
device=${NIGHTLY_DEVICE:-cpu}
out=${NIGHTLY_OUT:-nightly}
read -r -a extra <<< "${NIGHTLY_ARGS---epochs 2 --limit 128}"
features=()
if [[ -n "${CARGO_FEATURES:-}" ]]; then features=(--features "$CARGO_FEATURES"); fi

cargo build --release --locked -p harness "${features[@]}"
harness=target/release/harness
mkdir -p "$out"

status=0
for suite in $suites; do
  echo "::group::suite $suite"
  rc=0
  "$harness" suite "$suite" --results "$out/results" --reports "$out/reports" --device "$device" "${extra[@]}" || rc=$?
  echo "::endgroup::"
  # 3 = the sweep finished but some runs failed: the comparison below reports them.
  if [[ $rc -ne 0 && $rc -ne 3 ]]; then
    echo "suite $suite: harness exited with $rc" >&2
    status=2
    continue
  fi
  "$harness" report "$suite" --results "$out/results" --reports "$out/reports" \
      --filter "suite=$suite" --parquet "$out/$suite.parquet" --format md "${extra[@]}" > "$out/$suite.md"
  baseline="ci/baselines/$suite.parquet"
  if [[ $update -eq 1 ]]; then
    cp "$out/$suite.parquet" "$baseline"
    echo "baseline $baseline updated: commit it with the reason the numbers moved"
    continue
  fi
  if [[ ! -f "$baseline" ]]; then
    echo "suite $suite: no baseline $baseline (create one with --update-baseline)" >&2
    status=2
    continue
  fi
  rc=0
  "$harness" compare "$baseline" "$out/$suite.parquet" --filter "suite=$suite" \
      --output "$out/$suite-diff.md" || rc=$?
  case $rc in
    0) ;;
    1) echo "suite $suite: REGRESSION (see $out/$suite-diff.md)" >&2; [[ $status -eq 0 ]] && status=1 ;;
    *) echo "suite $suite: comparison failed ($rc)" >&2; status=2 ;;
  esac
done
exit $status
