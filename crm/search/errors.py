"""The one exception of the search package."""

from __future__ import annotations


class QueryError(ValueError):
    """A query (or a stored filter) that cannot be used.

    `message` says, for a person, what is wrong and what was expected; `position` is
    the 0-based character offset in the query text it refers to, or None when there is
    no text (a stored filter)."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position

    def __str__(self) -> str:
        if self.position is None:
            return self.message
        return f"{self.message} (character {self.position + 1})"
