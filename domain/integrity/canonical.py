"""Canonical JSON (RFC 8785, JCS) for everything that is hashed or signed.

``rfc8785`` is the reference encoder. For the common case, values whose floats
Python prints as ECMAScript does (see :func:`_float_differs`) and with no object
keys outside the Basic Multilingual Plane, RFC 8785 output is exactly what
``orjson`` writes with sorted keys (and what the standard library's
``json.dumps`` writes with sorted keys, compact separators and no ASCII
escaping): sorting by UTF-16 code units equals sorting by code points there,
both print the shortest round-trip digits of a float, and integers and
strings print the same. That path is many times faster, which matters on the
append and prediction hot paths; property tests check that the paths agree
byte for byte.

Two helpers serve values that are encoded once and embedded many times:
:class:`EncodedObject` is a read-only object that carries its canonical bytes
(``canonical_json`` splices them into an enclosing object instead of encoding
the object again), and :class:`NumberRecordEncoder` writes flat records of
numbers with fixed keys, such as a model's input row, in two C-level passes.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

import orjson
import rfc8785

from domain.errors import InvalidPayload

MAX_SAFE_INTEGER = 2**53 - 1  # the largest integer JSON readers hold exactly (IEEE doubles)
_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any, *, path: str = "payload") -> bytes:
    """Encode ``value`` as RFC 8785 canonical JSON bytes.

    Raises :class:`InvalidPayload` naming the offending field for values JSON
    cannot carry: NaN and infinities, integers beyond 2**53-1, lone surrogates,
    non-string object keys and types other than dict, list, str, int, float,
    bool and None.

    Members of a top-level object whose values are :class:`EncodedObject` are
    spliced in from their canonical bytes rather than encoded again.
    """
    if type(value) is dict:
        encoded = [key for key, item in value.items() if type(item) is EncodedObject]
        if encoded:
            return _spliced(value, encoded, path)
    return _canonical(value, path)


def _canonical(value: Any, path: str) -> bytes:
    try:
        needs_reference_encoder = _check(value)
    except _Bad as bad:
        field = path
        for key in reversed(bad.keys):
            field = _join(field, key)
        raise InvalidPayload(bad.describe(field), field=field) from None
    try:
        if needs_reference_encoder:
            return rfc8785.dumps(value)
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # float subclasses (numpy's), lone surrogates: the standard library settles them
            return _encoder.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        bad_path = _find_lone_surrogate(value, path) or path or "value"
        raise InvalidPayload(
            f"{bad_path} contains a lone surrogate, which is not valid Unicode text", field=bad_path
        ) from None
    except rfc8785.CanonicalizationError as exc:
        bad_path = _find_lone_surrogate(value, path)
        if bad_path:
            raise InvalidPayload(
                f"{bad_path} contains a lone surrogate, which is not valid Unicode text", field=bad_path
            ) from None
        raise InvalidPayload(f"{path or 'value'}: {exc}", field=path) from None


def _spliced(value: dict[str, Any], encoded: list[str], path: str) -> bytes:
    """``value`` in canonical form with the members named in ``encoded`` taken from their bytes.

    The object is encoded once with a unique marker string in place of each
    spliced member, and each marker (found exactly once) is then replaced by
    the member's bytes: the members sort as the standard sorts them, the marker
    being a string like any other. Should a marker ever be found other than
    once (a value holding that very text), the object is encoded whole.
    """
    stand_in = dict(value)
    markers: list[tuple[bytes, bytes]] = []
    for number, key in enumerate(encoded):
        marker = f"{_MARKER}{number}"
        stand_in[key] = marker
        markers.append((b'"' + marker.encode() + b'"', value[key].canonical))
    text = _canonical(stand_in, path)
    for quoted, canonical in markers:
        if text.count(quoted) != 1:
            return _canonical(value, path)
        text = text.replace(quoted, canonical)
    return text


_MARKER = f"spliced-member-{secrets.token_hex(16)}-"  # unguessable: no payload holds it by chance


class EncodedObject(dict[str, Any]):
    """A read-only JSON object that carries its canonical bytes, computed once.

    It is an ordinary ``dict`` to every reader; ``canonical_json`` of an object
    holding it as a member value splices :attr:`canonical` in. Build one with
    :func:`encoded_object` (or from bytes known to be ``canonical_json`` of
    the same mapping).
    """

    __slots__ = ("canonical",)

    def __init__(self, members: Mapping[str, Any], canonical: bytes) -> None:
        super().__init__(members)
        self.canonical = canonical

    def _read_only(self, *_: Any, **__: Any) -> NoReturn:
        raise TypeError("an EncodedObject is read-only: its canonical bytes would no longer match")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _read_only

    def __reduce__(self) -> Any:
        return (EncodedObject, (dict(self), self.canonical))


def encoded_object(members: Mapping[str, Any], *, path: str = "payload") -> EncodedObject:
    """``members`` with their canonical encoding attached (raises like :func:`canonical_json`)."""
    return EncodedObject(members, canonical_json(dict(members), path=path))


class NumberRecordEncoder:
    """Canonical JSON of records with the same keys whose values are all numbers, fast.

    A model's input row is such a record. ``orjson`` writes it with sorted keys
    in one call, and the bytes show whether any value prints otherwise in RFC
    8785 (an exponent, written ``e-`` or ``e+``; a non-finite float, written
    ``null``; an integral float, written with ``.0``); when a key's own text
    holds one of those marks, the values are written on their own to look.
    ``encode(record)`` always equals ``canonical_json(dict(record))``: records
    the fast form cannot settle (other keys, such a value, an integer beyond
    2**53-1, a value that is not an int or float, a key outside the Basic
    Multilingual Plane) take that path, which writes the same bytes or names
    the bad field.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self._names = frozenset(names)
        # orjson sorts keys by code point, which is the UTF-16 order of RFC 8785 inside the BMP
        self._fast = bool(self._names) and all(ord(c) <= 0xFFFF for name in self._names for c in name)
        self._keys_unmarked = not any(mark in orjson.dumps(name) for name in self._names for mark in _MARKS)

    def encode(self, record: Mapping[str, Any], *, path: str = "input") -> bytes:
        """``canonical_json(dict(record))``."""
        if self._fast and isinstance(record, dict) and record.keys() == self._names:
            values = record.values()
            kinds = set(map(type, values))
            if kinds <= _NUMBERS and (int not in kinds or _safe_integers(values)):
                text = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
                look = text if self._keys_unmarked else orjson.dumps(list(values))
                if not any(mark in look for mark in _MARKS) and not look.endswith(b".0]"):
                    return text
        return canonical_json(dict(record), path=path)

    def encoded(self, record: Mapping[str, Any], *, path: str = "input") -> EncodedObject:
        """The record as an :class:`EncodedObject`."""
        return EncodedObject(record, self.encode(record, path=path))


# How orjson writes what RFC 8785 writes otherwise: an exponent, NaN or an infinity, an integral float.
_MARKS = (b"e-", b"e+", b"null", b".0,", b".0}")
_NUMBERS = frozenset({int, float})


def _safe_integers(values: Iterable[Any]) -> bool:
    integers = [v for v in values if type(v) is int]
    return min(integers) >= -MAX_SAFE_INTEGER and max(integers) <= MAX_SAFE_INTEGER


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


class _Bad(Exception):
    """A value JSON cannot carry; the keys leading to it are collected on the way out."""

    def __init__(self, describe: Any) -> None:
        self.describe = describe
        self.keys: list[object] = []


def _float_differs(value: float) -> bool:
    """True when RFC 8785 writes this finite float differently from Python's ``repr``.

    Both print the shortest digits that round-trip. They differ only where
    Python uses an exponent (below 1e-4 or from 1e16 on; ECMAScript only below
    1e-6 or from 1e21 on, and writes it without a padded exponent) and for
    integral values, which Python writes with ``.0`` (``-0.0`` included).
    Every float from 2**52 on is integral, so the test needs no ``repr``:
    integral, or closer to zero than 1e-4 (a shortest round-trip form keeps a
    value on the same side of 1e-4, itself printed ``0.0001``).
    """
    return bool(value.is_integer() or -1e-4 < value < 1e-4)


def _check(value: Any) -> bool:
    """Validate ``value`` recursively; return True if it needs the reference encoder.

    Paths are built only when something is wrong, so the common case costs one
    pass of type checks; the common members of objects and arrays (strings,
    finite floats, safe integers, booleans, null) are settled inline, without
    a call.
    """
    kind = type(value)
    if kind is dict:
        members: Any = value.items()
    elif kind is list or kind is tuple:
        members = enumerate(value)
    else:
        return _check_other(value)
    is_object = kind is dict
    slow = False
    for key, item in members:
        if is_object:
            if not isinstance(key, str):
                raise _Bad(lambda path, key=key: f"{path} has a non-string key {key!r}; object keys must be strings")
            if not key.isascii() and any(ord(c) > 0xFFFF for c in key):
                slow = True
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is float:
            if item - item == 0.0:  # finite (NaN and infinities are named below)
                if item.is_integer() or -1e-4 < item < 1e-4:  # see _float_differs
                    slow = True
                continue
        elif kind is int and -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
            continue
        try:
            slow = _check(item) or slow
        except _Bad as bad:
            bad.keys.append(key)
            raise
    return slow


def _check_other(value: Any) -> bool:
    """:func:`_check` of a value that is not a plain dict, list or tuple."""
    if value is None or isinstance(value, (bool, str)):
        return False
    if isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return False
        raise _Bad(lambda path: f"{path} is an integer outside the JSON-safe range ±(2**53-1); send it as a string")
    if isinstance(value, float):
        if math.isfinite(value):
            return _float_differs(value)
        raise _Bad(
            lambda path: f"{path} is {value!r}, which JSON cannot represent (NaN and infinities are not allowed)"
        )
    if isinstance(value, dict):
        return _check(dict(value))
    if isinstance(value, (list, tuple)):
        return _check(list(value))
    raise _Bad(lambda path: f"{path} has type {type(value).__name__}, which is not a JSON value")


def _find_lone_surrogate(value: Any, path: str) -> str:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
    elif isinstance(value, dict):
        for key, item in value.items():
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                return _join(path, "<key>")
            found = _find_lone_surrogate(item, _join(path, key))
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _find_lone_surrogate(item, _join(path, index))
            if found:
                return found
    return ""
