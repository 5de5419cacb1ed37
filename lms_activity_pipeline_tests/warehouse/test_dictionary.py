"""The analysts' data dictionary (docs/data-dictionary.md) matches the schema, and its example queries run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from lms_activity_pipeline import db
from lms_activity_pipeline.warehouse.dictionary import render
from lms_activity_pipeline.warehouse.schema import METADATA
from lms_activity_pipeline_tests.conftest import Backend, PgDatabases
from lms_activity_pipeline_tests.ingest.test_feature_tables import crafted, ingest_day_by_day
from lms_activity_pipeline_tests.support.pipeline import Pipeline

DICTIONARY = Path(__file__).resolve().parents[2] / "docs" / "data-dictionary.md"


def dictionary_section() -> str:
    return DICTIONARY.read_text()


@pytest.mark.unit
def test_dictionary_column_tables_are_generated_from_the_schema() -> None:
    text = DICTIONARY.read_text()
    assert render(text) == text, "run: python -m lms_activity_pipeline.warehouse.dictionary"
    documented = set(re.findall(r"<!-- columns:(\w+) -->", text))
    assert documented == {t.name for t in METADATA.sorted_tables}


@pytest.mark.unit
def test_every_warehouse_column_has_a_description() -> None:
    missing = [f"{t.name}.{c.name}" for t in METADATA.sorted_tables for c in t.columns if not c.comment]
    assert not missing


def test_dictionary_example_queries_run_on_postgres(pg_databases: PgDatabases) -> None:
    backend = Backend("postgresql", pg_databases.create("lms_src"), pg_databases.create("lms_wh"))
    crafted(backend)
    pipe = Pipeline(backend)
    ingest_day_by_day(pipe)
    blocks = re.findall(r"```sql\n(.*?)```", dictionary_section(), re.DOTALL)
    statements = [s.strip() for block in blocks for s in block.split(";") if "SELECT" in s]
    assert len(statements) >= 10
    engine = db.create_engine(backend.warehouse_url)
    with engine.connect() as conn:
        rows = {statement: conn.execute(sa.text(statement)).fetchall() for statement in statements}
    engine.dispose()
    training = next(rows[s] for s in rows if "a training set" in s)
    assert training == []  # May 2024 is more than 90 days ago
    by_exam = next(rows[s] for s in rows if "mean percentage per exam" in s)
    assert [(title, round(pct, 1), n) for title, pct, n in by_exam] == [("Quadratics quiz", 61.3, 3)]
