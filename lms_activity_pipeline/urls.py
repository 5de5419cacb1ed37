"""Database URLs: validating them, and showing them without their credentials.

Every message, banner, log line and resource repr that shows a URL goes through :func:`redact_url`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote_plus

from lms_activity_pipeline.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

URL_EXAMPLE = "postgresql://user@db.internal:5432/lms"


def parse_database_url(name: str, raw: str) -> str:
    """A SQLAlchemy URL of a supported backend; a malformed one is a :class:`ConfigError` that never echoes it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(raw.strip())
    except ArgumentError:
        raise ConfigError(f"{name} is not a SQLAlchemy database URL (e.g. {URL_EXAMPLE})") from None
    except ValueError:  # SQLAlchemy's int() of the port, e.g. host:5432:99 or host:abc
        raise ConfigError(f"{name} has a malformed port: it must be a number from 1 to 65535 (e.g. {URL_EXAMPLE})") from None
    if url.port is not None and not 0 < url.port < 65536:
        raise ConfigError(f"{name}: port {url.port} is out of range 1-65535 (e.g. {URL_EXAMPLE})")
    if url.get_backend_name() not in {"sqlite", "postgresql"}:
        raise ConfigError(f"{name}: backend {url.get_backend_name()!r} is not supported (use sqlite or postgresql)")
    return raw.strip()



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
