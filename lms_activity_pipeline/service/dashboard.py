"""The dashboard at ``/``: server-rendered (Jinja2), signed in with a token kept in an HttpOnly,
SameSite=Strict cookie; its one form ("retry failed notifications") carries a CSRF token."""

from __future__ import annotations

import datetime as dt
import hmac
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import pandas as pd
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from lms_activity_pipeline import api
from lms_activity_pipeline.domain.preferences import FREQUENCIES, PreferenceError
from lms_activity_pipeline.service.auth import COOKIE, authenticate, csrf_token
from lms_activity_pipeline.service.notify import retry_failed
from lms_activity_pipeline.warehouse import service_reads
from lms_activity_pipeline.warehouse.preferences import PreferenceStore, find_mentor, set_preference
from lms_activity_pipeline.warehouse.tokens import TokenInfo, verify_token

router = APIRouter(include_in_schema=False)

#: A Dagster run id (a UUID); other ``last_run_id`` values (``dashboard-…`` retries, monitor runs) have no page.
DAGSTER_RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def run_url(ui_url: str, run_id: str | None) -> str | None:
    """The Dagster UI page of run ``run_id`` (``<ui>/runs/<run_id>``); None when it is no Dagster run id."""
    if not run_id or not DAGSTER_RUN_ID.match(run_id):
        return None
    return f"{ui_url.rstrip('/')}/runs/{run_id}"


def run_key_url(ui_url: str, run_key: str | None) -> str | None:
    """The Dagster UI's runs list filtered to the runs launched for ``run_key`` (tag ``dagster/run_key``)."""
    if not run_key:
        return None
    return f"{ui_url.rstrip('/')}/runs?q%5B%5D={quote(f'tag:dagster/run_key={run_key}', safe='')}"


templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))  # autoescaped


def _session(request: Request) -> tuple[str, TokenInfo] | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    info = verify_token(request.app.state.service.engine, token)
    return (token, info) if info else None


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, message: str | None = None) -> Response:
    session = _session(request)
    if session is None:
        return templates.TemplateResponse(request, "signin.html", {"error": None})
    return _page(request, session, message)


def _page(
    request: Request,
    session: tuple[str, TokenInfo],
    message: str | None,
    error: str | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    token, info = session
    service = request.app.state.service
    engine = service.engine
    ui = service.settings.dagster_ui_url
    failures = service_reads.failures(engine)
    for failure in failures:
        failure["run_url"] = run_url(ui, failure.get("last_run_id"))
    health = service.health()
    notify_run = service_reads.last_notify_run(engine)
    preferences: dict[int, list[str]] = {}
    for preference in PreferenceStore(engine).all():
        preferences.setdefault(preference.mentor_id, []).append(preference.describe())
    context: dict[str, Any] = {
        "who": info,
        "csrf": csrf_token(token),
        "message": message,
        "error": error,
        "form": form or {},
        "frequencies": FREQUENCIES,
        "preferences": preferences,
        "default_frequency": service.settings.notify_default_frequency,
        "counts": service.store.outbox().status_counts(),
        "failures": failures,
        "mentors": service_reads.per_mentor(engine),
        "health": health,
        "ui_url": ui.rstrip("/"),
        "ingest_runs_url": run_key_url(ui, health.get("last_run_key")),
        "notify_run": notify_run,
        "at_risk": at_risk(engine),
        "trend": service_reads.outbox_trend(engine, dt.datetime.now(dt.UTC).date()),
        "notify_run_url": run_url(ui, notify_run["run_id"]) if notify_run else None,
    }
    return templates.TemplateResponse(request, "dashboard.html", context, status_code=status_code)


def at_risk(engine: Any, limit: int = 100) -> dict[str, Any]:
    """The latest computed day's high and medium ``student_risk`` rows (``api.students_at_risk``), each reason
    in plain words (its ``detail``)."""
    rows = api.students_at_risk(level="medium", engine=engine).head(limit)

    def known(value: Any) -> Any:
        return None if value is None or pd.isna(value) else value

    students = [
        {
            "student_id": int(r["student_id"]),
            "student": known(r.get("student_username")) or "",
            "course_id": int(r["course_id"]),
            "course": known(r.get("course_title")) or "",
            "level": r["risk_level"],
            "score": float(r["risk_score"]),
            "mentor_id": None if known(r.get("mentor_id")) is None else int(r["mentor_id"]),
            "reasons": [str(reason.get("detail") or reason.get("code")) for reason in (r["reasons"] or [])],
        }
        for r in rows.to_dict(orient="records")
    ]
    as_of = None if rows.empty else str(rows["as_of"].iloc[0].isoformat())[:10]
    return {"as_of": as_of, "students": students}


@router.post("/signin")
def signin(request: Request, token: Annotated[str, Form()]) -> Response:
    token = token.strip()
    if verify_token(request.app.state.service.engine, token) is None:
        return templates.TemplateResponse(
            request, "signin.html", {"error": "That token is not valid (or was revoked)."}, status_code=401
        )
    answer = RedirectResponse("/", status_code=303)
    secure = request.url.scheme == "https"
    answer.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure, max_age=12 * 3600)
    return answer


@router.post("/signout")
def signout() -> Response:
    answer = RedirectResponse("/", status_code=303)
    answer.delete_cookie(COOKIE)
    return answer


def _writer(request: Request, csrf: str, action: str) -> tuple[str, TokenInfo]:
    """The signed-in session of a form post: 401 without one, 403 for a wrong CSRF token or a read token."""
    token = request.cookies.get(COOKIE)
    info = authenticate(request, token)
    assert token is not None
    if not hmac.compare_digest(csrf, csrf_token(token)):
        raise HTTPException(403, "CSRF token missing or wrong: reload the dashboard and try again")
    if not info.allows("write"):
        raise HTTPException(403, f"token {info.name!r} has scope 'read'; {action} needs 'write'")
    return token, info


@router.post("/actions/retry-failed")
def retry(request: Request, csrf: Annotated[str, Form()]) -> Response:
    _, info = _writer(request, csrf, "retrying")
    service = request.app.state.service
    summary = retry_failed(service.settings, service.store, info.name)
    return RedirectResponse(f"/?message={_quote(summary.describe())}", status_code=303)


@router.post("/actions/set-preference")
def set_mentor_preference(
    request: Request,
    csrf: Annotated[str, Form()],
    mentor: Annotated[str, Form()] = "",
    frequency: Annotated[str, Form()] = "",
    course: Annotated[str, Form()] = "",
) -> Response:
    """Set a mentor's notification frequency (for all students, or one course): ``lms-activity prefs set``'s
    code (``warehouse.preferences``); bad input re-renders the page (422) with one line naming the field."""
    session = _writer(request, csrf, "setting a preference")
    service = request.app.state.service
    form = {"mentor": mentor, "frequency": frequency, "course": course}
    try:
        if not mentor.strip():
            raise PreferenceError("mentor: give the LMS user id, username or e-mail of the mentor")
        if not frequency.strip():
            raise PreferenceError(f"frequency: choose one of {', '.join(FREQUENCIES)}")
        kind, scope_id = "all", 0
        if course.strip():
            try:
                kind, scope_id = "course", int(course.strip())
            except ValueError:
                raise PreferenceError(f"course must be a whole number (a course id), got {course!r}") from None
        mentor_id, label = find_mentor(service.reader(), mentor.strip())
        preference = set_preference(
            PreferenceStore(service.engine),
            service.settings.notify_default_frequency,
            mentor_id,
            kind,
            scope_id,
            {"frequency": frequency.strip()},
            dt.datetime.now(dt.UTC),
        )
    except PreferenceError as exc:
        return _page(request, session, None, _field_first(str(exc)), form, status_code=422)
    return RedirectResponse(f"/?message={_quote(f'{label}: {preference.describe()}')}", status_code=303)


def _field_first(text: str) -> str:
    """A preference error as the dashboard's fields name it (``--frequency`` -> ``frequency``, ``MENTOR`` ->
    ``mentor``)."""
    text = re.sub(r"^MENTOR\b", "mentor", text)
    return re.sub(r"^--([a-z-]+)", lambda m: m.group(1).replace("-", "_"), text)


def _quote(text: str) -> str:
    return quote(text[:500])
