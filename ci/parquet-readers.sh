#!/usr/bin/env bash
# Checks that the Parquet export of run records reads in pandas (pyarrow), polars and DuckDB.
#   ci/parquet-readers.sh RESULTS_DIR [PYTHON]
# PYTHON must have pandas, pyarrow, polars and duckdb (pip install pandas pyarrow polars duckdb).
# A reader that is not installed is skipped with a message, and the check fails when none ran;
# with PEFTBENCH_REQUIRE_OPTIONAL=1 (CI) every missing reader is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
results=${1:-results}
python=${2:-python3}
harness=${HARNESS:-target/debug/harness}
out=$(mktemp -d)/runs.parquet
"$harness" report --from "$results" --parquet "$out" --no-write --format csv > /dev/null
"$python" - "$out" <<'PY'
import json, os, sys
path = sys.argv[1]
n = None
ran, missing = [], []
try:
    import pandas as pd
    df = pd.read_parquet(path)
    n = len(df)
    acc = df.groupby(["task", "label"])["primary_value"].mean()
    lr = json.loads(df["config"].iloc[0])["recipe"]["lr"]
    print(f"pandas {pd.__version__}: {n} runs, {len(df.columns)} columns, {len(acc)} task x method cells, lr {lr}")
    assert df["seed"].dtype.name == "uint64" and df["primary_value"].dtype.name == "float64"
    assert n > 0, "no runs in the export"
    ran.append("pandas")
except ImportError:
    print("pandas/pyarrow not installed: skipped")
    missing.append("pandas/pyarrow")
try:
    import polars as pl
    df = pl.read_parquet(path)
    print(f"polars {pl.__version__}: {df.height} runs; statuses {sorted(set(df['status']))}")
    assert n is None or df.height == n
    assert df.height > 0, "no runs in the export"
    ran.append("polars")
except ImportError:
    print("polars not installed: skipped")
    missing.append("polars")
try:
    import duckdb
    rows = duckdb.sql(
        f"SELECT task, label, avg(primary_value) AS acc, max(config->>'$.recipe.lr') AS lr "
        f"FROM '{path}' GROUP BY ALL ORDER BY ALL").fetchall()
    print(f"duckdb {duckdb.__version__}: {len(rows)} task x method cells, first {rows[0]}")
    ran.append("duckdb")
except ImportError:
    print("duckdb not installed: skipped")
    missing.append("duckdb")
if not ran:
    sys.exit("FAIL: no Parquet reader ran (pip install pandas pyarrow polars duckdb)")
if missing and os.environ.get("PEFTBENCH_REQUIRE_OPTIONAL") == "1":
    sys.exit(f"FAIL: PEFTBENCH_REQUIRE_OPTIONAL=1 but not installed: {', '.join(missing)}")
print(f"PASS: read by {', '.join(ran)}")
PY
