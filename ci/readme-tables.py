#!/usr/bin/env python3
"""Copies the numbers of the committed reports (reports/*.md) into the README's tables.

A README table is updated from a report table with the same header line: each README row takes
the report row with the same key (its first cell and its `task` cell, or its first two cells when
the first repeats), so a
README table may show a subset of a report's rows. A README table that several report tables
could fill with different numbers is reported and left alone, as is one no report table fills.

    ci/readme-tables.py            # rewrite README.md, list what changed
    ci/readme-tables.py --check    # exit 1 when README.md differs from the reports

Run after ci/regenerate-reports.sh; prose numbers (timings, pretraining accuracies) are edited by
hand.
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def tables(lines):
    """(start, end) line ranges of the markdown tables in `lines`."""
    spans, start = [], None
    for i, line in enumerate(lines + [""]):
        if line.startswith("|"):
            if start is None:
                start = i
        elif start is not None:
            if i - start >= 3:
                spans.append((start, i))
            start = None
    return spans


def cells(row):
    return [c.strip() for c in row.strip().strip("|").split("|")]


def keyed(header, rows):
    """Rows by key: the first cell and a `task` cell if the table has one, or the first two cells
    where first cells repeat."""
    names = cells(header)
    columns = [0] + [i for i, name in enumerate(names) if i > 0 and name == "task"]
    firsts = [cells(r)[0] for r in rows]
    if len(columns) == 1 and len(set(firsts)) < len(firsts):
        columns = [0, 1]
    return {tuple(cells(r)[i] for i in columns): r for r in rows}


def main():
    check = "--check" in sys.argv[1:]
    readme_path = ROOT / "README.md"
    readme = readme_path.read_text().split("\n")
    reports = []
    for path in sorted((ROOT / "reports").glob("*.md")):
        lines = path.read_text().split("\n")
        for start, end in tables(lines):
            reports.append((path.name, lines[start], keyed(lines[start], lines[start + 2 : end])))
    changed, ambiguous, filled = 0, 0, 0
    for start, end in tables(readme):
        header, rows = readme[start], readme[start + 2 : end]
        ours = keyed(header, rows)
        fillers = []
        for name, report_header, report_rows in reports:
            if report_header == header and all(key in report_rows for key in ours):
                new_rows = [report_rows[key] for key in ours]
                if new_rows not in [f[1] for f in fillers]:
                    fillers.append((name, new_rows))
        if len(fillers) > 1:
            ambiguous += 1
            names = ", ".join(f[0] for f in fillers)
            print(f"README.md:{start + 1}: several report tables fit ({names}); left alone")
            continue
        if not fillers:
            continue
        filled += 1
        name, new_rows = fillers[0]
        if new_rows != rows:
            changed += 1
            print(f"README.md:{start + 1}: from reports/{name}")
            readme[start + 2 : end] = new_rows
    print(f"{filled} README tables come from reports: {changed} changed, {ambiguous} ambiguous")
    if check:
        sys.exit(1 if changed else 0)
    readme_path.write_text("\n".join(readme))


if __name__ == "__main__":
    main()
