"""Canonical JSON (RFC 8785, JCS) for everything that is hashed or signed.

``rfc8785`` is the reference encoder. For the common case, values whose floats
Python prints as ECMAScript does (see :func:`_float_differs`) and with no object
keys outside the Basic Multilingual Plane, RFC 8785 output is exactly what the
standard library's ``json.dumps`` writes with sorted keys, compact separators
and no ASCII escaping (sorting by UTF-16 code units equals sorting by code
points there, and integers print the same). That path is several times faster,
which matters on the append and prediction hot paths; a property test checks
that both paths agree byte for byte.
"""

from __future__ import annotations

import json
import math
from typing import Any

import rfc8785

from domain.errors import InvalidPayload

_MAX_SAFE_INTEGER = 2**53 - 1
_encoder = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical_json(value: Any, *, path: str = "payload") -> bytes:
    """Encode ``value`` as RFC 8785 canonical JSON bytes.

    Raises :class:`InvalidPayload` naming the offending field for values JSON
    cannot carry: NaN and infinities, integers beyond 2**53-1, lone surrogates,
    non-string object keys and types other than dict, list, str, int, float,
    bool and None.
    """
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
    """
    text = float.__repr__(value)
    return "e" in text or text.endswith(".0")


def _plain_scalar(item: Any) -> bool | None:
    """For a valid scalar, whether it needs the reference encoder; None for anything else.

    The common members of objects and arrays (strings, finite floats, safe
    integers, booleans, null) are settled here without a recursive call.
    """
    kind = type(item)
    if kind is str or kind is bool or item is None:
        return False
    if kind is float:
        if item - item != 0.0:  # NaN or an infinity: let _check name it
            return None
        text = float.__repr__(item)
        return "e" in text or text.endswith(".0")
    if kind is int and -_MAX_SAFE_INTEGER <= item <= _MAX_SAFE_INTEGER:
        return False
    return None


def _check(value: Any) -> bool:
    """Validate ``value`` recursively; return True if it needs the reference encoder.

    Paths are built only when something is wrong, so the common case costs one
    pass of type checks.
    """
    if value is None or isinstance(value, (bool, str)):
        return False
    if isinstance(value, int):
        if -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
            return False
        raise _Bad(
            lambda path: f"{path} is an integer outside the JSON-safe range ±(2**53-1); send it as a string"
        )
    if isinstance(value, float):
        if math.isfinite(value):
            return _float_differs(value)
        raise _Bad(
            lambda path: f"{path} is {value!r}, which JSON cannot represent (NaN and infinities are not allowed)"
        )
    if isinstance(value, dict):
        members: Any = value.items()
    elif isinstance(value, (list, tuple)):
        members = enumerate(value)
    else:
        raise _Bad(lambda path: f"{path} has type {type(value).__name__}, which is not a JSON value")
    is_object = isinstance(value, dict)
    slow = False
    for key, item in members:
        if is_object:
            if not isinstance(key, str):
                raise _Bad(lambda path, key=key: f"{path} has a non-string key {key!r}; object keys must be strings")
            if not key.isascii() and any(ord(c) > 0xFFFF for c in key):
                slow = True
        plain = _plain_scalar(item)
        if plain is not None:
            slow = plain or slow
            continue
        try:
            slow = _check(item) or slow
        except _Bad as bad:
            bad.keys.append(key)
            raise
    return slow


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
