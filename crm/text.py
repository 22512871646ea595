"""Text folding shared by search and sorting: case- and accent-insensitive."""

from __future__ import annotations

import unicodedata

# Letters that Unicode does not decompose into base letter + accent.
_EXTRA = str.maketrans({"ł": "l", "đ": "d", "ø": "o", "ħ": "h", "æ": "ae", "œ": "oe"})


def fold(text: str) -> str:
    """'Łódź Müller Dvořák' -> 'lodz muller dvorak'."""
    lowered = text.casefold().translate(_EXTRA)
    decomposed = unicodedata.normalize("NFKD", lowered)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))
