"""The text query language: text -> filter tree (names as typed, not yet resolved).

    query     := [or]                       (nothing at all: no filter)
    or        := and (OR and)*
    and       := not ([AND] not)*           (adjacent terms are ANDed)
    not       := NOT not | primary
    primary   := "(" or ")" | term
    term      := name op value | name IN "(" value ("," value)* ")"
               | name IS [NOT] EMPTY | word-or-quoted-text   (a free-text term)

Keywords (AND OR NOT IN IS EMPTY) are read in any letter case. A name or free-text
word is a run of characters other than spaces, quotes, parentheses, commas and the
operator characters; anything else goes in double quotes ("Miasto rodzinne",
"x\\"y"). Values: "quoted text", numbers (12, -3, 12.5 or 12,5: a comma between
digits is a decimal comma, so a list needs a space after its commas), dates
(2026-01-31), relative dates (-30d, +7d, today), yes/no/true/false.

Every failure is a QueryError naming the character offset and what was expected; the
parser has no other way out (depth, length and size are bounded).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from flask_babel import gettext as _

from crm.search.errors import QueryError
from crm.search.tree import (
    MAX_NUMBER,
    MAX_RELATIVE_DAYS,
    And,
    Condition,
    Node,
    Not,
    Op,
    Or,
    RelativeDate,
    Scalar,
    Text,
)

MAX_LENGTH = 2000
MAX_DEPTH = 32
MAX_TERMS = 100
MAX_LIST = 100

KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "IS", "EMPTY"})
WORD = re.compile(r'(?:[^\s()",=<>~!]|!(?!=)|(?<=[0-9]),(?=[0-9]))+')
NUMBER = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)?")
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
RELATIVE = re.compile(r"([+-])([0-9]+)[dD]")
TRUE_WORDS = frozenset({"yes", "true"})
FALSE_WORDS = frozenset({"no", "false"})
OPERATORS = ("!=", "<=", ">=", "=", "<", ">", "~")
# Typographic quotes (low-9, curly, guillemets), which people paste from documents.
SMART_QUOTES = "\u201e\u201c\u201d\u00ab\u00bb\u201a\u2018\u2019"


def keyword(word: str) -> str | None:
    """The keyword a bare word spells, if any (ASCII only, so a Turkish dotless i
    never spells IN)."""
    upper = word.upper()
    return upper if word.isascii() and upper in KEYWORDS else None


@dataclass(frozen=True)
class Token:
    kind: str  # WORD STRING OP LPAREN RPAREN COMMA EOF
    value: str  # the word, the decoded quoted text, or the operator
    pos: int
    end: int

    @property
    def keyword(self) -> str | None:
        return keyword(self.value) if self.kind == "WORD" else None


def _check_characters(text: str) -> None:
    if len(text) > MAX_LENGTH:
        raise QueryError(
            _("The query is too long: at most %(n)s characters.", n=MAX_LENGTH), MAX_LENGTH
        )
    for index, ch in enumerate(text):
        # Control characters (NUL above all: PostgreSQL refuses it in text) and lone
        # surrogates have no business in a query.
        if unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\t\n\r":
            raise QueryError(_("The query contains a control character."), index)


def tokenize(text: str) -> list[Token]:
    _check_characters(text)
    tokens: list[Token] = []
    pos, n = 0, len(text)
    while pos < n:
        ch = text[pos]
        if ch.isspace():
            pos += 1
        elif ch in "(),":
            kind = {"(": "LPAREN", ")": "RPAREN", ",": "COMMA"}[ch]
            tokens.append(Token(kind, ch, pos, pos + 1))
            pos += 1
        elif ch == '"':
            tokens.append(_quoted(text, pos))
            pos = tokens[-1].end
        elif op := next((o for o in OPERATORS if text.startswith(o, pos)), None):
            tokens.append(Token("OP", op, pos, pos + len(op)))
            pos += len(op)
        else:
            match = WORD.match(text, pos)
            if match is None:  # cannot happen: every other character starts a word
                raise QueryError(_("Unexpected character."), pos)
            tokens.append(Token("WORD", match.group(), pos, match.end()))
            pos = match.end()
    tokens.append(Token("EOF", "", n, n))
    return tokens


def _quoted(text: str, start: int) -> Token:
    """A double-quoted string; \\" and \\\\ are the escapes, any other backslash is kept."""
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            chars.append(text[i + 1])
            i += 2
        elif ch == '"':
            return Token("STRING", "".join(chars), start, i + 1)
        else:
            chars.append(ch)
            i += 1
    raise QueryError(_('The quoted text is not closed: add a closing ".'), start)


def literal(token: Token) -> Scalar:
    """The value a bare word spells (number, date, relative date, yes/no)."""
    word = token.value
    lowered = word.lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    if lowered == "today":
        return RelativeDate(0)
    if NUMBER.fullmatch(word):
        number = Decimal(word.replace(",", "."))
        if abs(number) >= MAX_NUMBER:
            raise QueryError(_("The number %(value)s is too large.", value=word), token.pos)
        # A written fraction stays a float (12.0 too), so printing gives the same tree.
        has_fraction = "." in word or "," in word
        return float(number) if has_fraction else int(number)
    if DATE.fullmatch(word):
        try:
            return date.fromisoformat(word)
        except ValueError:
            raise QueryError(_("%(value)s is not a real date.", value=word), token.pos) from None
    if relative := RELATIVE.fullmatch(word):
        days = int(relative.group(2))
        if days > MAX_RELATIVE_DAYS:
            raise QueryError(
                _("A relative date reaches at most %(n)s days.", n=MAX_RELATIVE_DAYS), token.pos
            )
        return RelativeDate(-days if relative.group(1) == "-" else days)
    if word[0] in SMART_QUOTES:
        raise QueryError(_('Put text in straight double quotes: "…".'), token.pos)
    raise QueryError(
        _(
            "Expected a value, found “%(found)s”: put text in double quotes "
            '("%(found)s"); numbers, dates (2026-01-31, -30d) and yes/no go without.',
            found=word,
        ),
        token.pos,
    )


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0
        self.terms = 0

    # -- helpers --------------------------------------------------------------------
    def peek(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "EOF":
            self.index += 1
        return token

    def found(self, token: Token) -> str:
        if token.kind == "EOF":
            return _("the end of the query")
        source = self.text[token.pos : token.end]
        if len(source) > 40:
            source = source[:39] + "…"
        return f"“{source}”"

    def nest(self, token: Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise QueryError(_("The query is nested too deeply."), token.pos)

    def count_term(self, token: Token) -> None:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise QueryError(
                _("The query has too many conditions (at most %(n)s).", n=MAX_TERMS), token.pos
            )

    def skip_commas(self) -> None:
        # A stray comma between terms ("Nowak, Anna") reads as a space.
        while self.peek().kind == "COMMA":
            self.advance()

    def starts_term(self, token: Token) -> bool:
        if token.kind in ("LPAREN", "STRING"):
            return True
        return token.kind == "WORD" and token.keyword not in ("AND", "OR")

    # -- grammar --------------------------------------------------------------------
    def query(self) -> Node | None:
        self.skip_commas()
        if self.peek().kind == "EOF":
            return None
        node = self.or_()
        token = self.peek()
        if token.kind == "RPAREN":
            raise QueryError(_("There is no ( for this ) to close."), token.pos)
        if token.kind != "EOF":
            raise QueryError(
                _(
                    "Expected AND, OR or the end of the query, found %(found)s.",
                    found=self.found(token),
                ),
                token.pos,
            )
        return node

    def or_(self) -> Node:
        items = [self.and_()]
        while self.peek().keyword == "OR":
            self.advance()
            items.append(self.and_())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_(self) -> Node:
        items = [self.not_()]
        while True:
            self.skip_commas()
            token = self.peek()
            if token.keyword == "AND":
                self.advance()
                items.append(self.not_())
            elif self.starts_term(token):
                items.append(self.not_())
            else:
                break
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_(self) -> Node:
        self.skip_commas()
        token = self.peek()
        if token.keyword == "NOT":
            self.advance()
            self.nest(token)
            child = self.not_()
            self.depth -= 1
            return Not(child, pos=token.pos)
        return self.primary()

    def primary(self) -> Node:
        token = self.peek()
        if token.kind == "LPAREN":
            self.advance()
            self.nest(token)
            node = self.or_()
            closing = self.peek()
            if closing.kind != "RPAREN":
                raise QueryError(
                    _(
                        "Expected ) to close the ( at character %(n)s, found %(found)s.",
                        n=token.pos + 1,
                        found=self.found(closing),
                    ),
                    closing.pos,
                )
            self.advance()
            self.depth -= 1
            return node
        if token.kind == "STRING" or (
            token.kind == "WORD" and token.keyword not in KEYWORDS - {"EMPTY"}
        ):
            return self.term()
        message = _(
            "Expected a condition or a search word, found %(found)s.", found=self.found(token)
        )
        if token.keyword:
            message += " " + _("To search for the word itself, put it in double quotes.")
        raise QueryError(message, token.pos)

    def term(self) -> Node:
        name = self.advance()
        self.count_term(name)
        following = self.peek()
        if following.kind == "OP":
            self.advance()
            value_token = self.peek()
            value = self.value(following)
            return Condition(
                name.value,
                Op(following.value),
                value,
                pos=name.pos,
                op_pos=following.pos,
                value_pos=(value_token.pos,),
            )
        if following.keyword == "IN":
            self.advance()
            values, positions = self.value_list(following)
            return Condition(
                name.value, Op.IN, values, pos=name.pos, op_pos=following.pos, value_pos=positions
            )
        if following.keyword == "IS":
            self.advance()
            op = Op.EMPTY
            if self.peek().keyword == "NOT":
                self.advance()
                op = Op.NOT_EMPTY
            empty = self.peek()
            if empty.keyword != "EMPTY":
                raise QueryError(
                    _(
                        "Expected EMPTY or NOT EMPTY after IS, found %(found)s.",
                        found=self.found(empty),
                    ),
                    empty.pos,
                )
            self.advance()
            return Condition(name.value, op, None, pos=name.pos, op_pos=following.pos)
        return Text(name.value, pos=name.pos)

    def value(self, after: Token) -> Scalar:
        token = self.peek()
        if token.kind == "STRING":
            self.advance()
            return token.value
        if token.kind == "WORD":
            self.advance()
            return literal(token)
        raise QueryError(
            _(
                "Expected a value after %(op)s (text in double quotes, a number, a date or "
                "yes/no), found %(found)s.",
                op=after.value,
                found=self.found(token),
            ),
            token.pos,
        )

    def value_list(self, in_token: Token) -> tuple[tuple[Scalar, ...], tuple[int, ...]]:
        opening = self.peek()
        if opening.kind != "LPAREN":
            raise QueryError(
                _("Expected ( after IN, found %(found)s.", found=self.found(opening)), opening.pos
            )
        self.advance()
        values: list[Scalar] = []
        positions: list[int] = []
        while True:
            positions.append(self.peek().pos)
            values.append(self.value(in_token))
            if len(values) > MAX_LIST:
                raise QueryError(_("A list holds at most %(n)s values.", n=MAX_LIST), positions[-1])
            token = self.peek()
            if token.kind == "COMMA":
                self.advance()
            elif token.kind == "RPAREN":
                self.advance()
                return tuple(values), tuple(positions)
            else:
                raise QueryError(
                    _("Expected , or ) in the list, found %(found)s.", found=self.found(token)),
                    token.pos,
                )


def parse(text: str) -> Node | None:
    """The tree for a query (field names as typed), or None for an empty query."""
    return _Parser(text).query()
