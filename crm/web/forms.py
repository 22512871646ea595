"""Form helpers shared by every domain."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wtforms import SelectChoice


def options(pairs: Iterable[tuple[Any, Any]]) -> list[SelectChoice]:
    """(value, label) pairs as WTForms select choices (tuples are deprecated in 3.3)."""
    return [SelectChoice(value=value, label=label) for value, label in pairs]


def option_values(choices: Iterable[SelectChoice]) -> set[str]:
    return {choice.value for choice in choices}
