"""Database URLs shown without their credentials.

Every message, banner, log line and resource repr that shows a URL goes through :func:`redact_url`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote_plus

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


#: A query parameter whose name contains one of these carries a credential (``password``,
#: ``sslpassword``, ``passfile``, ``token``, ``api_key``, ``secret``, ``sslkey``, ``X-Amz-Signature``...).
CREDENTIAL_MARKERS = ("pass", "pwd", "secret", "token", "key", "auth", "credential", "signature")
HIDDEN = "***"


def is_credential(name: str) -> bool:
    """Whether a URL query parameter called ``name`` may hold a secret (case-insensitive)."""
    lowered = name.lower()
    return any(marker in lowered for marker in CREDENTIAL_MARKERS)


def redact_url(url: str | URL) -> str:
    """``url`` fit for a message or a log: its password and every credential-like query parameter as ``***``.

    Every message, banner and log line that shows a URL goes through this function. A string that
    SQLAlchemy cannot parse is not shown at all: its secret could be anywhere in it.
    """
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = url if isinstance(url, URL) else make_url(url.strip())
    except (ArgumentError, ValueError):
        return "<malformed URL>"
    query = {key: HIDDEN if is_credential(key) else value for key, value in parsed.query.items()}
    shown = parsed.set(query=query).render_as_string(hide_password=True)
    return shown.replace(f"={quote_plus(HIDDEN)}", f"={HIDDEN}")  # SQLAlchemy quotes query values
