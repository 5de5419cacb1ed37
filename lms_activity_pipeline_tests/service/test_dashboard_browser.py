"""The dashboard in a real headless Chromium (selenium) against ``lms-activity serve`` (real uvicorn):
sign in with a token, see counts that match the warehouse, retry a failure and see it sent through the
loopback Zulip, see today's trend and the notify run's link, set a mentor's preference (a bad value first). A failing test leaves a screenshot next to its temporary files (the path is printed)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from lms_activity_pipeline.warehouse import tokens
from lms_activity_pipeline.warehouse.preferences import PreferenceStore
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.fake_zulip import FakeZulip
from lms_activity_pipeline_tests.support.notify_helpers import add_mentors, fast_zulip, recent_days, recent_school
from lms_activity_pipeline_tests.support.pipeline import Pipeline, op_metadata

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def ensure_chromium() -> None:
    """Debian's chromium and chromium-driver, installed when missing (the test machines run as root)."""
    if Path(CHROMIUM).exists() and Path(DRIVER).exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail("chromium and chromium-driver are missing: apt-get install -y chromium chromium-driver")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(backend: Backend, fake_zulip: FakeZulip, tmp_path: Path) -> Iterator[str]:
    """``lms-activity serve`` on a free loopback port, Zulip at the fake server."""
    port = free_port()
    env = {
        **os.environ,
        "LMS_DATABASE_URL": backend.lms_url,
        "LMS_WAREHOUSE_URL": backend.warehouse_url,
        "LMS_HOME": str(tmp_path / "lms_home"),
        "ZULIP_SITE": fake_zulip.url,
        "ZULIP_EMAIL": fake_zulip.email,
        "ZULIP_API_KEY": fake_zulip.api_key,
    }
    cmd = [sys.executable, "-m", "lms_activity_pipeline.cli", "serve", "--port", str(port), "--verbose"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not start: {proc.communicate()[0] if proc.poll() is not None else ''}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
    assert "GET /api/v1/health" in output and "lmsat_" not in output  # access log on (--verbose), never a token


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sign_in_see_the_outbox_and_retry_a_failure_in_chromium(
    backend: Backend, fake_zulip: FakeZulip, server: str, tmp_path: Path
) -> None:
    ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    add_mentors(fake_zulip)
    recent_school(backend.lms_url)
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(fake_zulip)})
    pipe.ingest(*recent_days())
    fake_zulip.fail_next("messages", 500, times=3, method="POST")
    assert op_metadata(pipe.notify(event_types=("exam_passed",)))["failed"] == 1
    token = tokens.create_token(pipe.warehouse.engine, "operator", "write")

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(server + "/")
        driver.find_element(By.ID, "token").send_keys("lmsat_wrong_token")
        driver.find_element(By.ID, "signin").click()
        assert "not valid" in WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "error"))[0].text
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "signin").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "counts"))

        cookie = driver.get_cookie("lms_token")
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        counts = pipe.log_rows()["status"].value_counts().to_dict()
        for status in ("pending", "sent", "failed"):
            assert driver.find_element(By.ID, f"count-{status}").text == str(counts.get(status, 0)), status
        failures = driver.find_element(By.ID, "failures").text
        assert "gave up after 3 attempt(s): HTTP 500" in failures

        # the failed pair's notify run and the last notify run link into the Dagster UI
        failed_run = pipe.log_rows().query("status == 'failed'")["last_run_id"].item()
        expected_href = f"http://127.0.0.1:3000/runs/{failed_run}"
        assert [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#failures a.run-link")] == [
            expected_href
        ]
        assert driver.find_element(By.ID, "notify-run").get_attribute("href") == expected_href

        driver.find_element(By.ID, "retry").click()
        message = WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.ID, "message"))[0]
        assert "sent" in message.text
        log = pipe.log_rows()
        assert log.query("event_key == 'exam:1:exam_passed'")["status"].item() == "sent"
        assert any("passed the exam" in m.content for m in fake_zulip.messages)
        assert driver.find_element(By.ID, "count-failed").text == "0"
        assert driver.find_element(By.ID, "count-sent").text == str((log["status"] == "sent").sum())

        # the trend: today's row counts what the warehouse processed today
        today = dt.datetime.now(dt.UTC).date()
        row = driver.find_element(By.ID, f"trend-{today.isoformat()}").find_elements(By.CSS_SELECTOR, "td.n")
        processed = pd.to_datetime(log["processed_at"], utc=True).dt.date == today
        expected = [str(int((processed & (log["status"] == s)).sum())) for s in ("sent", "failed", "skipped")]
        assert [c.text for c in row] == expected

        # a retry from the dashboard is no Dagster run: shown, not linked
        assert driver.find_element(By.XPATH, "//tr[th='last notify run']/td").text.startswith("dashboard-operator-")
        assert not driver.find_elements(By.ID, "notify-run")

        # set a mentor's preference: a bad course id is named, then a good one is stored and shown
        driver.find_element(By.ID, "pref-mentor").send_keys("mentor_m")
        Select(driver.find_element(By.ID, "pref-frequency")).select_by_value("daily")
        driver.find_element(By.ID, "pref-course").send_keys("algebra")
        driver.find_element(By.ID, "pref-save").click()
        error = WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "prefs-error"))[0]
        assert error.text.startswith("course must be a whole number")
        course = driver.find_element(By.ID, "pref-course")
        course.clear()
        course.send_keys("100")
        driver.find_element(By.ID, "pref-save").click()
        message = WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "message"))[0]
        assert message.text == "mentor 10 (mentor_m): course 100: daily, at 18:00"
        stored = PreferenceStore(pipe.warehouse.engine).all([10])
        assert [(p.scope_kind, p.scope_id, p.frequency) for p in stored] == [("course", 100, "daily")]
        assert driver.find_element(By.ID, "prefs-10").text == "course 100: daily, at 18:00"
    except BaseException:
        shot = tmp_path / "dashboard-failure.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
        raise
    finally:
        driver.quit()


def test_the_retry_form_needs_the_csrf_token_and_a_write_token(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from lms_activity_pipeline.service.app import create_app
    from lms_activity_pipeline_tests.service.helpers import service_settings

    url = f"sqlite:///{tmp_path / 'wh.sqlite3'}"
    with TestClient(create_app(service_settings(url, url, tmp_path))) as c:
        engine = c.app.state.service.engine  # type: ignore[attr-defined]
        reader, writer = tokens.create_token(engine, "ro", "read"), tokens.create_token(engine, "rw", "write")
        assert c.post("/actions/retry-failed", data={"csrf": "x"}).status_code == 401
        c.cookies.set("lms_token", writer)
        assert c.post("/actions/retry-failed", data={"csrf": "forged"}).status_code == 403
        c.cookies.set("lms_token", reader)
        from lms_activity_pipeline.service.auth import csrf_token

        assert c.post("/actions/retry-failed", data={"csrf": csrf_token(reader)}).status_code == 403
        signin = c.post("/signin", data={"token": writer}, follow_redirects=False)
        assert signin.status_code == 303
        header = signin.headers["set-cookie"].lower()
        assert "httponly" in header and "samesite=strict" in header


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_serve_keeps_an_idle_connection_open_past_uvicorns_default(backend: Backend, server: str) -> None:
    """A client pausing 7 s (uvicorn closes after 5 s by default) sends on the same connection again."""
    import http.client

    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/api/v1/health")
    first = conn.getresponse()
    first.read()
    local = conn.sock.getsockname()
    time.sleep(7)
    conn.request("GET", "/api/v1/health")  # http.client would fail here (RemoteDisconnected) had it been closed
    again = conn.getresponse()
    again.read()
    assert (first.status, again.status) == (200, 200) and conn.sock.getsockname() == local
    conn.close()
