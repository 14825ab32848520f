"""What a run executed on, compared: the digest of a captured environment and the
difference between two captures (pure; capturing lives in the runners)."""

from __future__ import annotations

import hashlib
from typing import Any

from domain.integrity.canonical import canonical_json


def environment_digest(environment: dict[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of a capture without its ``digest``."""
    body = {k: v for k, v in environment.items() if k != "digest"}
    return "sha256:" + hashlib.sha256(canonical_json(body, path="environment")).hexdigest()


def _flatten(value: Any, prefix: str, into: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else key, into)
    else:
        into[prefix] = value


def environment_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What differs between two captures: fields (dotted paths) and packages (changed, only in one)."""
    packages_a, packages_b = a.get("packages") or {}, b.get("packages") or {}
    fields_a: dict[str, Any] = {}
    fields_b: dict[str, Any] = {}
    _flatten({k: v for k, v in a.items() if k not in ("packages", "digest")}, "", fields_a)
    _flatten({k: v for k, v in b.items() if k not in ("packages", "digest")}, "", fields_b)
    fields = {
        key: {"a": fields_a.get(key), "b": fields_b.get(key)}
        for key in sorted(set(fields_a) | set(fields_b))
        if fields_a.get(key) != fields_b.get(key)
    }
    changed = {
        name: {"a": packages_a[name], "b": packages_b[name]}
        for name in sorted(set(packages_a) & set(packages_b))
        if packages_a[name] != packages_b[name]
    }
    diff = {
        "identical": not fields and not changed and set(packages_a) == set(packages_b),
        "fields": fields,
        "packages": {
            "changed": changed,
            "only_in_a": {n: packages_a[n] for n in sorted(set(packages_a) - set(packages_b))},
            "only_in_b": {n: packages_b[n] for n in sorted(set(packages_b) - set(packages_a))},
        },
    }
    return diff
