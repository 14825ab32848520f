"""MLflow search syntax over records the ledger already loaded: filter strings
(``metrics.auc > 0.9 AND params.depth = '3' AND tags.team LIKE 'risk%'``),
``order_by`` clauses and opaque page tokens.

A record is a :class:`Searchable`: its metrics (numbers), params, tags and
attributes (strings, or numbers for times). A malformed filter, order or token
is an :class:`InvalidPayload` naming it, so nothing is searched with half a query.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from domain.errors import InvalidPayload

ENTITIES = {
    "metric": "metrics",
    "metrics": "metrics",
    "param": "params",
    "params": "params",
    "parameter": "params",
    "parameters": "params",
    "tag": "tags",
    "tags": "tags",
    "attribute": "attributes",
    "attributes": "attributes",
    "attr": "attributes",
    "run": "attributes",
}
_IDENT = r"(?:[A-Za-z_]+\.)?(?:`[^`]+`|\"[^\"]+\"|[\w\-.:/]+?)"
_OP = r"!=|>=|<=|=|<|>|(?i:not\s+in\b|in\b|not\s+like\b|not\s+ilike\b|like\b|ilike\b)"
_VALUE = r"'(?:[^']|'')*'|\"[^\"]*\"|\([^)]*\)|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_CLAUSE = re.compile(rf"\s*(?P<ident>{_IDENT})\s*(?P<op>{_OP})\s*(?P<value>{_VALUE})\s*(?P<end>(?i:and\b)|$)")
_STRING_ITEM = re.compile(r"\s*('(?:[^']|'')*'|\"[^\"]*\")\s*(?:,|$)")
NUMERIC_OPS = ("=", "!=", "<", "<=", ">", ">=")
STRING_OPS = ("=", "!=", "like", "ilike", "not like", "not ilike", "in", "not in")
FILTER_MAX = 10_000


@dataclass(frozen=True)
class Searchable:
    """What a filter or an order sees of one record."""

    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, str | int | float | None] = field(default_factory=dict)
    subject: Any = field(default=None, compare=False)
    """The record itself (a run, an experiment), carried through filtering and sorting."""

    def value(self, entity: str, key: str) -> Any:
        """The record's value of ``entity.key``, or None."""
        found: dict[str, Any] = getattr(self, entity)
        return found.get(key)


@dataclass(frozen=True)
class Clause:
    """One comparison of a filter."""

    entity: str
    key: str
    op: str
    value: Any


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "`\"'":
        inner = text[1:-1]
        return inner.replace("''", "'") if text[0] == "'" else inner
    return text


def _identifier(text: str, numeric_attributes: Sequence[str]) -> tuple[str, str]:
    prefix, dot, rest = text.partition(".")
    if dot and prefix.lower() in ENTITIES and rest:
        return ENTITIES[prefix.lower()], _unquote(rest)
    return "attributes", _unquote(text)


def parse_filter(text: str | None, numeric_attributes: Sequence[str] = ()) -> list[Clause]:
    """The clauses of an MLflow filter string (``AND`` only, as MLflow's own grammar)."""
    if not text or not text.strip():
        return []
    if len(text) > FILTER_MAX:
        raise InvalidPayload(f"filter must be at most {FILTER_MAX} characters", field="filter")
    clauses: list[Clause] = []
    position = 0
    while position < len(text):
        match = _CLAUSE.match(text, position)
        if match is None:
            raise InvalidPayload(f"invalid filter at {text[position:][:60]!r}", field="filter")
        entity, key = _identifier(match["ident"], numeric_attributes)
        op = " ".join(match["op"].lower().split())
        raw = match["value"]
        numeric = entity == "metrics" or (entity == "attributes" and key in numeric_attributes)
        value: Any
        if op in ("in", "not in"):
            if not raw.startswith("("):
                raise InvalidPayload(f"{op.upper()} takes a parenthesised list of strings", field="filter")
            items = _STRING_ITEM.findall(raw[1:-1])
            if not items:
                raise InvalidPayload(f"{op.upper()} takes a non-empty list of quoted strings", field="filter")
            value = [_unquote(item) for item in items]
        elif numeric:
            if op not in NUMERIC_OPS or raw[0] in "'\"(":
                raise InvalidPayload(
                    f"{entity}.{key} compares with a number ({', '.join(NUMERIC_OPS)})", field="filter"
                )
            value = float(raw)
        else:
            if op not in STRING_OPS or raw[0] not in "'\"":
                raise InvalidPayload(f"{entity}.{key} compares with a quoted string", field="filter")
            value = _unquote(raw)
        clauses.append(Clause(entity, key, op, value))
        position = match.end()
        if not match["end"] and position < len(text):
            raise InvalidPayload(f"invalid filter at {text[position:][:60]!r}", field="filter")
        if match["end"] and position >= len(text):
            raise InvalidPayload("the filter ends with AND", field="filter")
    return clauses


def _like(pattern: str, flags: int = 0) -> re.Pattern[str]:
    parts = [".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern]
    return re.compile("".join(parts) + r"\Z", flags | re.DOTALL)


NEGATIONS = ("!=", "not like", "not ilike", "not in")


def _holds(clause: Clause, record: Searchable, absent_negates: bool) -> bool:
    actual = record.value(clause.entity, clause.key)
    if actual is None:
        return absent_negates and clause.entity == "tags" and clause.op in NEGATIONS
    op, wanted = clause.op, clause.value
    if op in ("in", "not in"):
        return (str(actual) in wanted) == (op == "in")
    if op in ("like", "not like", "ilike", "not ilike"):
        flags = re.IGNORECASE if "ilike" in op else 0
        return bool(_like(wanted, flags).match(str(actual))) != op.startswith("not")
    if isinstance(wanted, float):
        number = float(actual)
        comparisons: dict[str, Callable[[float, float], bool]] = {
            "=": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
        }
        return bool(comparisons[op](number, wanted))
    return (str(actual) == str(wanted)) == (op == "=")


def matches(clauses: list[Clause], record: Searchable, *, absent_negates: bool = False) -> bool:
    """True when every clause holds for the record. A missing metric, param or tag never matches, except that
    with ``absent_negates`` (the model registry's searches, as MLflow's own) a missing tag satisfies ``!=``,
    ``NOT LIKE``, ``NOT ILIKE`` and ``NOT IN`` (the client adds ``tags.`mlflow.prompt.is_prompt` != 'true'``)."""
    return all(_holds(clause, record, absent_negates) for clause in clauses)


_ORDER = re.compile(rf"^\s*(?P<ident>{_IDENT})\s*(?P<dir>(?i:asc|desc))?\s*$")


def sort_records(
    records: list[Searchable], order_by: list[str], default: list[tuple[str, str, bool]]
) -> list[Searchable]:
    """Records in ``order_by`` order (each ``entity.key [ASC|DESC]``), then ``default`` (entity, key,
    descending); a record without the value sorts last either way."""
    keys: list[tuple[str, str, bool]] = []
    for clause in order_by:
        match = _ORDER.match(clause or "")
        if match is None:
            raise InvalidPayload(f"invalid order_by clause {clause!r}", field="order_by")
        entity, key = _identifier(match["ident"], ())
        keys.append((entity, key, (match["dir"] or "asc").lower() == "desc"))
    ordered = list(records)
    for entity, key, descending in reversed([*keys, *default]):
        present = [r for r in ordered if r.value(entity, key) is not None]
        missing = [r for r in ordered if r.value(entity, key) is None]
        present.sort(key=lambda r: _sort_value(r.value(entity, key)), reverse=descending)
        ordered = present + missing
    return ordered


def _sort_value(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def page_offset(token: str | None) -> int:
    """The offset a page token carries (0 without one)."""
    if not token:
        return 0
    try:
        offset = int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
    except (ValueError, KeyError, TypeError, binascii.Error, json.JSONDecodeError):
        raise InvalidPayload("invalid page_token", field="page_token") from None
    if offset < 0:
        raise InvalidPayload("invalid page_token", field="page_token")
    return offset


def page(items: list[Any], token: str | None, max_results: int) -> tuple[list[Any], str | None]:
    """One page of ``items`` from the offset ``token`` carries, and the next page's token (None at the end)."""
    offset = page_offset(token)
    chunk = items[offset : offset + max_results]
    end = offset + max_results
    following = base64.urlsafe_b64encode(json.dumps({"offset": end}).encode()).decode() if end < len(items) else None
    return chunk, following
