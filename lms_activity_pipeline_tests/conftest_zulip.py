"""Pytest plugin: the ``fake_zulip`` fixture (register with ``pytest_plugins``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lms_activity_pipeline_tests.support.fake_zulip import FakeZulip


@pytest.fixture
def isolated_zulip_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ``ZULIP_*`` variables and a fresh ``HOME``, so no ~/.zuliprc leaks in; returns that HOME."""
    for name in list(os.environ):
        if name.startswith("ZULIP_"):
            monkeypatch.delenv(name)
    home = tmp_path / "zulip_home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def fake_zulip(isolated_zulip_env: Path) -> Iterator[FakeZulip]:
    """A running :class:`FakeZulip` (bot ``lms-bot@zulip.example.com`` / ``test-api-key``), stopped afterwards."""
    with FakeZulip() as server:
        yield server
