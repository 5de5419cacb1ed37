"""The analysts' data dictionary, rendered from the Core tables (their column comments and types).

The column tables of ``docs/data-dictionary.md`` are generated here, so they cannot drift
from the schema: ``python -m lms_activity_pipeline.warehouse.dictionary [PATH]``
rewrites every block between ``<!-- columns:TABLE -->`` and ``<!-- /columns -->``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from lms_activity_pipeline.warehouse.schema import table_named

BLOCK = re.compile(r"(<!-- columns:(\w+) -->\n)(.*?)(<!-- /columns -->)", re.DOTALL)


def sql_type(column: sa.Column) -> str:
    """The column's type as PostgreSQL spells it, e.g. ``timestamp with time zone``."""
    return column.type.compile(dialect=postgresql.dialect()).lower()


def column_table(table: sa.Table) -> str:
    """A markdown table: column, type, meaning."""
    rows = ["| column | type | meaning |", "|---|---|---|"]
    for column in table.columns:
        key = " (key)" if column.primary_key else ""
        rows.append(f"| `{column.name}`{key} | {sql_type(column)} | {(column.comment or '').replace('|', '&#124;')} |")
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    """``text`` with every column block regenerated."""

    def replace(match: re.Match[str]) -> str:
        return match.group(1) + column_table(table_named(match.group(2))) + match.group(4)

    return BLOCK.sub(replace, text)


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "docs/data-dictionary.md")
    path.write_text(render(path.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
