"""The error every entry point turns into one line: a setting, option or input that cannot be used."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is wrong; the message is one line naming the variable or option."""
