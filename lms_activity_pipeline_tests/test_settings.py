"""The one list of environment variables: parsing, the README's table, the test fixture."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from lms_activity_pipeline.errors import ConfigError
from lms_activity_pipeline.settings import DEMO_DAYS, VARIABLES, load_settings, load_variable, render_variables
from lms_activity_pipeline_tests.conftest import LMS_ENV_VARS

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_configuration_table_is_generated_from_the_variables() -> None:
    text = README.read_text()
    assert render_variables(text) == text, "run: python -m lms_activity_pipeline.settings"
    for variable in VARIABLES:
        assert f"| `{variable.name}` |" in text


def test_the_test_fixture_clears_every_variable() -> None:
    assert set(LMS_ENV_VARS) == {v.name for v in VARIABLES} | {"DAGSTER_HOME"}


def test_defaults_and_which_variables_were_set(tmp_path: Path) -> None:
    settings = load_settings(
        {"LMS_HOME": str(tmp_path), "LMS_TIMEZONE": "Europe/Berlin", "ZULIP_API_KEY": "s3cret-key"}
    )
    assert settings.warehouse_url == f"sqlite:///{(tmp_path / 'warehouse.sqlite3').resolve()}"
    assert settings.lms_url_is_default and settings.poll_interval == 60 and settings.lookback_seconds == 300
    assert settings.is_set("timezone") and settings.is_set("zulip_api_key") and not settings.is_set("warehouse_url")
    assert "s3cret-key" not in repr(settings) and settings.zulip_api_key == "s3cret-key"


def test_a_bad_value_is_one_line_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^LMS_ACTIVITY_POLL_INTERVAL='soon' is not a whole number of seconds$"):
        load_settings({"LMS_ACTIVITY_POLL_INTERVAL": "soon"})
    with pytest.raises(ConfigError, match=r"^LMS_WAREHOUSE_SCHEMA='bad-name' must be letters"):
        load_variable("LMS_WAREHOUSE_SCHEMA", {"LMS_WAREHOUSE_SCHEMA": "bad-name"})


def test_demo_partitions_start_on_the_first_day_of_its_history(tmp_path: Path) -> None:
    # No demo yet: the default demo's first day; a non-demo LMS: the contract's 2024-01-01.
    expected = (dt.date.today() - dt.timedelta(days=DEMO_DAYS)).isoformat()
    assert load_settings({"LMS_HOME": str(tmp_path)}).partitions_start == expected
    assert load_settings({"LMS_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}).partitions_start == "2024-01-01"
    with sqlite3.connect(tmp_path / "demo_lms.sqlite3") as conn:  # the marker the demo writes
        conn.execute("CREATE TABLE lms_activity_demo (history_start DATE)")
        conn.execute("INSERT INTO lms_activity_demo VALUES ('2026-03-01')")
    assert load_settings({"LMS_HOME": str(tmp_path)}).partitions_start == "2026-03-01"
    assert (
        load_settings({"LMS_HOME": str(tmp_path), "LMS_PARTITIONS_START": "2026-02-01"}).partitions_start
        == "2026-02-01"
    )
