"""Which witnesses must cosign a checkpoint: the C2SP tlog-policy format.

A policy (https://c2sp.org/tlog-policy) lists logs (``log <vkey> [<url>]``),
witnesses (``witness <name> <vkey> [<url>]``), groups (``group <name> all|any|<k>
<member>...``) and exactly one ``quorum <name>`` (``none`` for no witnessing).
:func:`parse_policy` reads one, :func:`k_of_n` builds the common case, and
:meth:`WitnessPolicy.satisfied_by` decides whether a set of cosigners meets the
quorum.

Nothing in this module performs I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from domain.integrity.checkpoint import CheckpointFormatError, parse_verifier_key
from domain.integrity.cosignature import Cosigner, parse_cosigner_vkey

__all__ = [
    "PolicyError",
    "PolicyWitness",
    "WitnessPolicy",
    "configured_policy",
    "k_of_n",
    "parse_policy",
    "parse_witnesses",
]

_WHITESPACE: Final[re.Pattern[str]] = re.compile(r"[ \t]+")
_DECIMAL: Final[re.Pattern[str]] = re.compile(r"[1-9][0-9]{0,3}")


class PolicyError(CheckpointFormatError):
    """Text that is not a valid tlog-policy, or a quorum that cannot be built."""

    title = "Invalid witness policy"


@dataclass(frozen=True)
class PolicyWitness:
    """A witness named in a policy: its cosigner key and, optionally, its submission URL."""

    name: str
    cosigner: Cosigner
    url: str | None = None


@dataclass(frozen=True)
class _Group:
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class WitnessPolicy:
    """A parsed tlog-policy: logs, witnesses, groups and the quorum (``none`` or a defined name)."""

    witnesses: dict[str, PolicyWitness]
    quorum: str
    groups: dict[str, _Group] = field(default_factory=dict)
    logs: tuple[str, ...] = ()
    text: str = ""

    def satisfied_by(self, cosigned: set[str]) -> bool:
        """Whether cosignatures from the witnesses named in ``cosigned`` meet the quorum."""
        return self.quorum == "none" or self._holds(self.quorum, cosigned)

    def _holds(self, name: str, cosigned: set[str]) -> bool:
        group = self.groups.get(name)
        if group is None:
            return name in cosigned
        return sum(self._holds(member, cosigned) for member in group.members) >= group.threshold


def _fail(number: int, message: str) -> PolicyError:
    return PolicyError(f"witness policy line {number}: {message}")


def parse_policy(text: str) -> WitnessPolicy:
    """Parse tlog-policy text; :class:`PolicyError` names the first bad line."""
    if not isinstance(text, str):
        raise PolicyError("witness policy must be text")
    witnesses: dict[str, PolicyWitness] = {}
    groups: dict[str, _Group] = {}
    logs: list[str] = []
    keys: set[bytes] = set()
    quorum: str | None = None
    for number, raw in enumerate(text.split("\n"), start=1):
        if any(c < " " and c != "\t" for c in raw):
            raise _fail(number, "contains a control character")
        words = [w for w in _WHITESPACE.split(raw.strip()) if w]
        if not words or words[0].startswith("#"):
            continue
        kind, args = words[0], words[1:]
        if kind == "log" and len(args) in (1, 2):
            try:
                name, public_key = parse_verifier_key(args[0])
            except CheckpointFormatError as exc:
                raise _fail(number, exc.detail) from exc
            raw_key = public_key.public_bytes_raw()
            if raw_key in keys:
                raise _fail(number, "duplicate key")
            keys.add(raw_key)
            logs.append(args[0])
        elif kind == "witness" and len(args) in (2, 3):
            name = args[0]
            if name == "none" or name in witnesses or name in groups:
                raise _fail(number, f"name {name!r} is already defined")
            try:
                cosigner = parse_cosigner_vkey(args[1])
            except CheckpointFormatError as exc:
                raise _fail(number, exc.detail) from exc
            raw_key = cosigner.public_key.public_bytes_raw()
            if raw_key in keys:
                raise _fail(number, "duplicate key")
            keys.add(raw_key)
            witnesses[name] = PolicyWitness(name, cosigner, args[2] if len(args) == 3 else None)
        elif kind == "group" and len(args) >= 3:
            name, k, members = args[0], args[1], tuple(args[2:])
            if name == "none" or name in witnesses or name in groups:
                raise _fail(number, f"name {name!r} is already defined")
            unknown = [m for m in members if m not in witnesses and m not in groups]
            if unknown:
                raise _fail(number, f"group member {unknown[0]!r} is not defined on a preceding line")
            if len(set(members)) != len(members):
                raise _fail(number, "a group lists a member twice")
            if k == "all":
                threshold = len(members)
            elif k == "any":
                threshold = 1
            elif _DECIMAL.fullmatch(k) and int(k) <= len(members):
                threshold = int(k)
            else:
                raise _fail(number, f"threshold {k!r} must be all, any or 1..{len(members)}")
            groups[name] = _Group(threshold, members)
        elif kind == "quorum" and len(args) == 1:
            if quorum is not None:
                raise _fail(number, "a policy has exactly one quorum line")
            if args[0] != "none" and args[0] not in witnesses and args[0] not in groups:
                raise _fail(number, f"quorum {args[0]!r} is not defined on a preceding line")
            quorum = args[0]
        else:
            raise _fail(number, f"not a log, witness, group or quorum line: {raw.strip()[:60]!r}")
    if quorum is None:
        raise PolicyError("witness policy has no quorum line")
    return WitnessPolicy(witnesses, quorum, groups, tuple(logs), text)


def k_of_n(witnesses: list[PolicyWitness], k: int) -> WitnessPolicy:
    """The policy "any ``k`` of these witnesses" (``k`` 0: no witnessing), written as tlog-policy text."""
    if not 0 <= k <= len(witnesses):
        raise PolicyError(f"a quorum of {k} needs 0..{len(witnesses)} witnesses, {len(witnesses)} are configured")
    lines = [f"witness {w.name} {w.cosigner.vkey}" + (f" {w.url}" if w.url else "") for w in witnesses]
    if k == 0:
        lines.append("quorum none")
    else:
        lines += [f"group ledger-quorum {k} {' '.join(w.name for w in witnesses)}", "quorum ledger-quorum"]
    return parse_policy("".join(line + "\n" for line in lines))


def parse_witnesses(text: str) -> list[PolicyWitness]:
    """``name=url=vkey,...`` (a vkey holds no ``=``) -> witnesses; :class:`PolicyError` on a malformed entry."""
    found: list[PolicyWitness] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, sep1, rest = entry.partition("=")
        url, sep2, vkey = rest.rpartition("=")
        if not (sep1 and sep2 and name and url.startswith(("http://", "https://"))):
            raise PolicyError(f"witness entry {entry[:60]!r} is not name=http(s)://url=vkey")
        try:
            cosigner = parse_cosigner_vkey(vkey)
        except CheckpointFormatError as exc:
            raise PolicyError(f"witness entry {name!r}: {exc.detail}") from exc
        found.append(PolicyWitness(name, cosigner, url.rstrip("/")))
    return found


def configured_policy(witnesses: str, policy: str) -> WitnessPolicy | None:
    """The policy a ledger is configured with; None without witnesses.

    ``witnesses`` is ``name=url=vkey,...``; ``policy`` is empty (all of them), a
    number k (any k of them) or tlog-policy text, whose witnesses without a URL
    take the URL of the listed witness with the same key.
    """
    listed = parse_witnesses(witnesses)
    policy = policy.strip()
    if not listed and not policy:
        return None
    if not policy or policy.isdigit():
        return k_of_n(listed, int(policy) if policy else len(listed))
    parsed = parse_policy(policy + "\n")
    by_key = {w.cosigner.vkey: w for w in listed}
    for name, witness in list(parsed.witnesses.items()):
        given = by_key.get(witness.cosigner.vkey)
        if witness.url is None and given is not None:
            parsed.witnesses[name] = PolicyWitness(name, witness.cosigner, given.url)
    return parsed
