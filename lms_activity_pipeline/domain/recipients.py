"""Mentors as recipients: their LMS contact, their Zulip account, and whether they can get a DM (pure Python)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MentorContact:
    """A mentor's row of the LMS ``Users`` table (``None`` fields when unknown)."""

    mentor_id: int
    username: str | None = None
    email: str | None = None
    full_name: str | None = None
    is_active: bool | None = True
    in_lms: bool = True

    @property
    def label(self) -> str:
        return f"{self.username or '?'} (id {self.mentor_id})"

    @property
    def skip_reason(self) -> str | None:
        """Why the LMS side already rules out a DM, or ``None``."""
        if not self.in_lms:
            return f"mentor id {self.mentor_id} is not in the LMS Users table"
        if not self.email or "@" not in self.email:
            return f"mentor {self.label} has no e-mail address in the LMS"
        if self.is_active is False:
            return f"mentor {self.label} is inactive in the LMS"
        return None


@dataclass(frozen=True)
class ZulipAccount:
    """What ``GET /api/v1/users/{email}`` said about a mentor; ``found=False`` for "No such user"."""

    email: str
    found: bool
    user_id: int | None = None
    full_name: str | None = None
    is_active: bool = False
    is_bot: bool = False

    @classmethod
    def from_api(cls, email: str, user: Mapping[str, Any]) -> ZulipAccount:
        return cls(
            email=normalise_email(email),
            found=True,
            user_id=int(user["user_id"]),
            full_name=user.get("full_name"),
            is_active=bool(user.get("is_active", True)),
            is_bot=bool(user.get("is_bot", False)),
        )

    @classmethod
    def unknown(cls, email: str) -> ZulipAccount:
        return cls(email=normalise_email(email), found=False)

    @property
    def skip_reason(self) -> str | None:
        """Why this mentor cannot get a DM, or ``None`` when they can."""
        if not self.found:
            return f"no Zulip user with e-mail {self.email}"
        if not self.is_active:
            return f"Zulip user {self.email} is deactivated"
        if self.is_bot:
            return f"Zulip user {self.email} is a bot"
        return None


def normalise_email(email: str) -> str:
    """E-mails compare case-insensitively (as Zulip does): trimmed, lower case."""
    return email.strip().lower()


def user_path(email: str) -> str:
    """The lookup endpoint for ``email`` (percent-encoded: ``+``, ``/`` and ``@`` are safe in a path)."""
    return "users/" + urllib.parse.quote(normalise_email(email), safe="")
