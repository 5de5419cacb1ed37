"""Whether untrusted text shows anything at all when rendered.

Pure Python. A name made only of zero-width spaces, bidi marks, whitespace or
control characters is "there" for the database but blank on a mentor's screen.
"""

from __future__ import annotations

import unicodedata

#: Categories that never draw a glyph: controls, format characters (zero-width
#: spaces and joiners, bidi marks and isolates, the BOM, soft hyphen), separators.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
#: Letters and marks that draw nothing either (Unicode's default-ignorable code points outside
#: those categories, and the braille blank): Hangul fillers, the combining grapheme joiner,
#: Khmer inherent vowels, Mongolian and other variation selectors.
_BLANK_LOOKING = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u180f\u2800\u3164\uffa0"
    + "".join(map(chr, range(0xFE00, 0xFE10)))
    + "".join(map(chr, range(0xE0100, 0xE01F0)))
)


def is_visible(char: str) -> bool:
    """Does this character draw something?"""
    return char not in _BLANK_LOOKING and unicodedata.category(char) not in _INVISIBLE_CATEGORIES


def has_visible_text(text: object) -> bool:
    """True when ``text`` (``None`` is empty) has at least one character that draws something."""
    return text is not None and any(is_visible(ch) for ch in str(text))


def plural(count: int, noun: str) -> str:
    """``1 mentor``, ``3 mentors``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
