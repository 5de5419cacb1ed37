"""Helpers for tests that start the real Dagster and Celery processes: their environment, and stopping them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def subprocess_env(env: dict[str, str]) -> dict[str, str]:
    """This environment without the developer's ``LMS_*``/``DAGSTER_*`` variables, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LMS_", "DAGSTER_"))}
    return {
        **base,
        **env,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        # Console scripts (`celery`, `dagster`) of this environment come first.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PYTHONUNBUFFERED": "1",
    }


def start_dagster_daemon(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """``dagster-daemon run`` on the project's workspace in its own process group, output to ``log_path``."""
    with log_path.open("w") as log:
        return subprocess.Popen(
            ["dagster-daemon", "run", "-w", str(ROOT / "workspace.yaml")],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_monitor_daemon(env: dict[str, str], cwd: Path, interval: int) -> subprocess.Popen:
    """``lms-activity monitor --daemon --interval N`` with its output (text, stderr merged) on ``stdout``."""
    return subprocess.Popen(
        [sys.executable, "-m", "lms_activity_pipeline.cli", "monitor", "--daemon", "--interval", str(interval)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop_process_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the process group of ``proc`` (started with ``start_new_session``), then SIGKILL if it lingers."""
    pgid = proc.pid  # start_new_session: the group id is the leader's pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                proc.wait(timeout=5)
                return
            time.sleep(0.2)
    proc.wait(timeout=5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def materialize(env: dict[str, str], assets: list[str], *args: str) -> None:
    """``dagster asset materialize`` of ``assets`` (``args``: ``--partition ...``, ``--config-json ...``), as an
    operator types it; fails the test with the command's output when it fails."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "lms_activity_pipeline.definitions",
            "--select",
            ",".join(assets),
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
