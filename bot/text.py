"""Free text people type (notes, countermeasures, plan names), made storable on both databases.

PostgreSQL refuses a NUL character in text ("A string literal cannot contain NUL"), and no driver
can encode an unpaired surrogate (which JSON's ``\\ud800`` escapes can produce) as UTF-8; SQLite
stores the first and fails on the second. Other control characters (escape sequences, backspace,
DEL, C1 controls) are stored by both but only ever garble what Slack shows. Line breaks and tabs
are text; everything else of Unicode category Cc or Cs is taken out.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Kept: what people type on purpose. CR is folded into LF first, so Windows line ends survive.
_KEPT_CONTROLS = frozenset("\n\t")
_LINE_ENDS = re.compile(r"\r\n?")


@dataclass(frozen=True)
class CleanText:
    text: str
    removed: int  # how many characters were taken out (0: the text is as typed, line ends aside)


def clean_text(text: str) -> CleanText:
    """`text` without NUL and other control characters or unpaired surrogates; see the module.

    Callers store `.text` and, when `.removed` is not 0, tell the user that characters were
    removed (the value itself is never refused for this).
    """
    folded = _LINE_ENDS.sub("\n", text)
    kept = "".join(char for char in folded if char in _KEPT_CONTROLS or not _is_unstorable(char))
    return CleanText(kept, len(folded) - len(kept))


def _is_unstorable(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs")
