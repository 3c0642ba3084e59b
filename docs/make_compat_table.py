"""Write the name table of docs/pytorch3d-compatibility.md from tests/data/pytorch3d_names.tsv.

The TSV is the single record of PyTorch3D's public names and their status in p3dlab; this script
renders it as Markdown between the two marker comments of the page, so the page cannot drift from
the data that tests/test_pytorch3d_names.py checks against the package.

    python docs/make_compat_table.py           # rewrite the table in the page
    python docs/make_compat_table.py --check   # exit 1 if the page's table is out of date

It lives outside the package on purpose: nothing in ``p3dlab`` depends on test data.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, List, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
NAMES_TSV = ROOT / "tests" / "data" / "pytorch3d_names.tsv"
PAGE = ROOT / "docs" / "pytorch3d-compatibility.md"
BEGIN = "<!-- BEGIN GENERATED TABLE: docs/make_compat_table.py writes it from tests/data/pytorch3d_names.tsv -->"
END = "<!-- END GENERATED TABLE -->"
STATUSES = ("same", "different", "absent")
KINDS = {
    "init": "Names exported by PyTorch3D's packages",
    "module": "Deeper module paths",
}


class Row(NamedTuple):
    kind: str
    module: str
    name: str
    status: str
    note: str


def read_rows(path: Path = NAMES_TSV) -> List[Row]:
    """The TSV's rows, in file order; ``#`` lines are comments and the first other line is the header."""
    rows: List[Row] = []
    header_seen = False
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        if not header_seen:
            header_seen = True
            continue
        fields = line.split("\t")
        if len(fields) != 5:
            raise ValueError(f"{path.name}:{lineno}: expected 5 tab-separated fields, got {len(fields)}")
        row = Row(*fields)
        if row.kind not in KINDS or row.status not in STATUSES or not row.module.startswith("pytorch3d"):
            raise ValueError(f"{path.name}:{lineno}: bad kind, status or module in {fields[:4]}")
        if row.status != "same" and not row.note:
            raise ValueError(f"{path.name}:{lineno}: a '{row.status}' row needs a note")
        rows.append(row)
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(rows: List[Row]) -> str:
    """The Markdown table block (without the marker lines)."""
    out: List[str] = []
    for kind, title in KINDS.items():
        kind_rows = [r for r in rows if r.kind == kind]
        counts = Counter(r.status for r in kind_rows)
        out.append(f"### {title}")
        out.append("")
        out.append(", ".join(f"{counts[s]} {s}" for s in STATUSES) + f" ({len(kind_rows)} names).")
        out.append("")
        by_module: Dict[str, List[Row]] = {}
        for r in kind_rows:
            by_module.setdefault(r.module, []).append(r)
        for module, module_rows in by_module.items():
            here = "p3dlab" + module[len("pytorch3d") :]
            out.append(f"#### `{module}` → `{here}`")
            out.append("")
            out.append("| Name | Status | Note |")
            out.append("| --- | --- | --- |")
            for r in module_rows:
                out.append(f"| `{r.name}` | {r.status} | {_cell(r.note)} |")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def page_with_table(page_text: str, table: str) -> str:
    """``page_text`` with the block between the markers replaced by ``table``."""
    try:
        start = page_text.index(BEGIN) + len(BEGIN)
        stop = page_text.index(END, start)
    except ValueError:
        raise ValueError(f"{PAGE.name} needs the two marker lines:\n{BEGIN}\n{END}") from None
    return page_text[:start] + "\n\n" + table + "\n" + page_text[stop:]


def table_in_page(page_text: str) -> str:
    """The block the page holds between the markers (as ``render`` writes it)."""
    start = page_text.index(BEGIN) + len(BEGIN)
    stop = page_text.index(END, start)
    return page_text[start:stop].strip("\n") + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the page is up to date")
    args = parser.parse_args(argv)
    table = render(read_rows())
    text = PAGE.read_text(encoding="utf-8")
    if args.check:
        if table_in_page(text) != table:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run python docs/make_compat_table.py", file=sys.stderr)
            return 1
        return 0
    new = page_with_table(text, table)
    if new != text:
        PAGE.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
