#!/usr/bin/env python3
"""Verify an ML Ledger export bundle offline, with nothing but Python 3.11+ and ``cryptography``.

Usage::

    python verify_bundle.py bundle.zip [--public-key ledger.pem] [--workers N]
                                       [--extract DIR] [--audit-path POSITION]

The bundle is read in place and never extracted before it has passed every
check (``--extract`` writes it under DIR only afterwards). In order, it checks:

1. the archive: member names (no absolute paths, no ``..``, no links, no
   duplicates, only the bundle's layout), sizes, compression ratios and the
   total size, all from the zip directory before a byte is decompressed;
2. the ledger's keys: the keyring's genesis key signed itself and every
   rotation is signed by the key it replaces; ``--public-key`` anchors the chain
   on a key you obtained from the ledger operator; ``keys/`` holds exactly these;
   each key's window of positions (from its introduction to the rotation that
   retired it) and any compromise a revocation recorded;
3. every event of ``events.jsonl``: the line format, the SHA-256 of the exact
   envelope bytes it carries, the Ed25519 signature by a ledger key inside that
   key's window, and that the envelope names the same aggregate, type and
   version as the line; then every event a revoked key signed after its
   compromise is named;
4. ledger order, and each aggregate's versions 1..n linked by ``prev_hash``;
5. every approval statement's signature with the approver's registered key;
6. every checkpoint: a C2SP signed note signed by a ledger key;
7. the inclusion proof of every event in the latest checkpoint's tree, and the
   consistency proof of every earlier checkpoint with the latest one;
8. the signed export record: the bundle holds exactly the events it commits to,
   and every report, manifest and provenance file has the SHA-256 it names;
   report attachments also match their ``Report.Published`` events, manifests
   the events they list, and provenance verifies with the ledger key.

It prints a summary and exits 0, or prints ``FAILED: <where>: <what>`` naming
the first problem and exits 1.

Proof layout: one RFC 9162 multi-leaf inclusion proof for all events at once.
``proofs/inclusion.json`` names the tree size and the root; ``proofs/inclusion.jsonl``
holds, one JSON array a line in leaf order, ``[leaf index, position]`` of each
event and the complete-subtree hashes ``[level, index, hash]`` that cover every
leaf that is not an event of the bundle (a ``mlledger.bundle.v1`` bundle has
both lists in the one JSON document instead; it is still read). Every event's
standard RFC 9162 audit path is built from these (``--audit-path`` prints one);
checking the root once checks all of them. ``proofs/consistency.json`` holds RFC
9162 consistency proofs from every bundled checkpoint to the latest.

Memory: events.jsonl and the proof lines are read as streams, a block of lines
at a time, and folded as they pass; what stays is a compact head per aggregate
(its last hash and version), the few events whose payload is read, and one
subtree hash per tree level.

Standalone on purpose: this file is copied into every bundle and must run
where ML Ledger is not installed, with nothing but Python and ``cryptography``
(PyNaCl optional). So it imports nothing of the project and re-implements what
it checks: RFC 6962/9162 hashing and proof verification (as in
``domain.integrity.merkle``) and C2SP signed-note checkpoints (as in
``domain.integrity.checkpoint``). tests/service/exports/test_verify_bundle_equivalence.py
holds the two equal: the same hashes, audit paths and verdicts on the RFC 6962
reference vectors and on random trees, proofs and notes, valid and tampered.
It also pins where they differ by design: no consistency proof from the empty
tree, and only Ed25519 signature lines (the only ones the ledger writes).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import hashlib
import heapq
import json
import math
import os
import re
import stat
import struct
import sys
import time
import uuid
import zipfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

try:  # Optional and never required: libsodium checks Ed25519 about twice as fast as OpenSSL.
    from nacl.bindings import crypto_sign_open as _sodium_open
    from nacl.exceptions import BadSignatureError as _SodiumRefused
except ImportError:  # pragma: no cover - the bare virtualenv case
    _sodium_open = None  # type: ignore[assignment]

FORMAT = "mlledger.bundle.v2"
FORMATS = (FORMAT, "mlledger.bundle.v1")
"""Bundle formats this verifier reads: v2 ships the inclusion proof's entries as JSON lines."""
INCLUSION_FORMAT = "mlledger.inclusion-multiproof.v2"
INCLUSION_FORMAT_V1 = "mlledger.inclusion-multiproof.v1"
CONSISTENCY_FORMAT = "mlledger.consistency-proofs.v1"

README = "README.txt"
VERIFIER = "verify_bundle.py"
INDEX = "bundle.json"
EVENTS = "events.jsonl"
INCLUSION = "proofs/inclusion.json"
INCLUSION_LINES = "proofs/inclusion.jsonl"
CONSISTENCY = "proofs/consistency.json"
KEYRING_LINES = "keys/keyring.jsonl"
WITNESS_POLICY = "witness-policy.txt"

KEYRING_ESTABLISHED = "mlledger.keyring.Established.v1"
KEYRING_ROTATED = "mlledger.keyring.Rotated.v1"
KEYRING_REVOKED = "mlledger.keyring.Revoked.v1"
SIGNING_KEY_REGISTERED = "mlledger.principal.SigningKeyRegistered.v1"
APPROVAL_GRANTED = "mlledger.modelversion.ApprovalGranted.v1"
APPROVAL_REJECTED = "mlledger.modelversion.ApprovalRejected.v1"
REPORT_PUBLISHED = "mlledger.report.Published.v1"
EXPORT_CREATED = "mlledger.export.Created.v1"
OPENED_TOPICS = frozenset(
    {
        KEYRING_ESTABLISHED,
        KEYRING_ROTATED,
        KEYRING_REVOKED,
        SIGNING_KEY_REGISTERED,
        APPROVAL_GRANTED,
        APPROVAL_REJECTED,
        REPORT_PUBLISHED,
        EXPORT_CREATED,
    }
)
"""Events whose payload the verifier reads (all others are checked by hash and signature only)."""

ZERO_HASH = "0" * 64
DSSE_PAYLOAD_TYPE = "application/vnd.in-toto+json"
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_SAFE = r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}"
LAYOUT = re.compile(
    rf"(?:{re.escape(README)}|{re.escape(VERIFIER)}|{re.escape(INDEX)}|{re.escape(EVENTS)}"
    rf"|{re.escape(INCLUSION)}|{re.escape(INCLUSION_LINES)}|{re.escape(CONSISTENCY)}|{re.escape(KEYRING_LINES)}|{re.escape(WITNESS_POLICY)}"
    rf"|checkpoints/(?:0|[1-9][0-9]{{0,19}})\.txt|keys/ledger/[0-9a-f]{{16}}\.pem"
    rf"|keys/approvers/{_UUID}/[0-9a-f]{{16}}\.pem|manifests/{_UUID}(?:\.provenance)?\.json"
    rf"|reports/{_SAFE}|reports/plots/{_SAFE}|reports/attachments/{_UUID}/{_SAFE})"
)
_LINE = re.compile(
    rb'\{"position":([1-9][0-9]{0,18}),"leaf_index":(0|[1-9][0-9]{0,18}),"aggregate_type":"([A-Za-z]{1,100})",'
    rb'"aggregate_id":"(' + _UUID.encode() + rb')","version":([1-9][0-9]{0,18}),"topic":"([A-Za-z0-9._-]{1,200})",'
    rb'"hash":"([0-9a-f]{64})","key_id":"([0-9a-f]{16})","signature":"([A-Za-z0-9+/]{86}==)","envelope":'
)
_ENVELOPE_HEAD = re.compile(rb'\{"actor":"(?:[^"\\]|\\.)*","aggregate_id":"([^"\\]*)","aggregate_type":"([^"\\]*)",')
_ENVELOPE_TAIL = re.compile(
    rb',"prev_hash":"([0-9a-f]{64})","recorded_at":"[0-9T:.Z-]{1,40}","type":"([^"\\]*)","v":1,'
    rb'"version":([1-9][0-9]{0,18})\}\Z'
)


# -- layout helpers shared with the exporter ------------------------------------


def checkpoint_name(tree_size: int) -> str:
    """The member holding the signed checkpoint of ``tree_size`` leaves."""
    return f"checkpoints/{tree_size}.txt"


def manifest_name(run_id: str) -> str:
    """The member holding a run's reproducibility manifest (its canonical JSON)."""
    return f"manifests/{run_id}.json"


def provenance_name(run_id: str) -> str:
    """The member holding a run's DSSE-signed provenance."""
    return f"manifests/{run_id}.provenance.json"


def attachment_name(report_id: str, name: str, digest: str) -> str:
    """The member of a report attachment: its recorded name when that is a safe file name, else its digest."""
    safe = name if re.fullmatch(_SAFE, name) else digest.removeprefix("sha256:")
    return f"reports/attachments/{report_id}/{safe}"


def event_line(
    *,
    position: int,
    leaf_index: int,
    aggregate_type: str,
    aggregate_id: str,
    version: int,
    topic: str,
    hash: str,
    key_id: str,
    signature: str,
    envelope: bytes,
) -> bytes:
    """One line of ``events.jsonl`` (without its newline): the seal and the envelope bytes exactly as hashed."""
    head = (
        f'{{"position":{position},"leaf_index":{leaf_index},"aggregate_type":"{aggregate_type}",'
        f'"aggregate_id":"{aggregate_id}","version":{version},"topic":"{topic}","hash":"{hash}",'
        f'"key_id":"{key_id}","signature":"{signature}","envelope":'
    )
    return head.encode("ascii") + envelope + b"}"


# -- results -----------------------------------------------------------------


class BundleProblem(Exception):
    """The first thing found wrong with a bundle: where it is and what it is."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")
        self.where = where
        self.what = what


@dataclass(frozen=True)
class Limits:
    """What the verifier accepts before decompressing anything."""

    max_bundle_bytes: int = 4 * 1024**3
    max_members: int = 100_000
    max_member_bytes: int = 2 * 1024**3
    max_total_bytes: int = 8 * 1024**3
    max_ratio: int = 200
    ratio_from_bytes: int = 1024**2
    """Members smaller than this may compress any amount (a ratio means nothing there)."""


@dataclass
class Summary:
    """What a verified bundle holds."""

    model: str = ""
    export_id: str = ""
    created_at: str = ""
    created_by: str = ""
    events: int = 0
    aggregates: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    ledger_keys: list[str] = field(default_factory=list)
    key_windows: dict[str, Window] = field(default_factory=dict)
    note_keys: list[str] = field(default_factory=list)
    anchored: bool = False
    approvals: int = 0
    checkpoints: list[int] = field(default_factory=list)
    witnessing: str = ""
    origin: str = ""
    tree_size: int = 0
    root_hash: str = ""
    proof_nodes: int = 0
    consistency_proofs: int = 0
    files: int = 0
    seconds: float = 0.0
    workers: int = 1
    ed25519: str = ""

    def lines(self) -> list[str]:
        """The human summary printed on success."""
        kinds = ", ".join(f"{count} {name}" for name, count in sorted(self.by_type.items()))
        rate = self.events / self.seconds if self.seconds else 0.0
        trust = (
            "anchored on the public key you gave"
            if self.anchored
            else "NOT anchored: compare these key ids with the ledger operator's published key (or pass --public-key)"
        )
        sizes = f"{self.checkpoints[0]}..{self.checkpoints[-1]}" if self.checkpoints else "-"
        return [
            f"OK: export {self.export_id} of model {self.model!r}, created {self.created_at} by {self.created_by}",
            f"events: {self.events} in {self.aggregates} aggregates ({kinds}): hashes, signatures, "
            "envelopes, order, versions and chains verified",
            f"ledger keys: {', '.join(self.ledger_keys)} ({trust})",
            *(f"checkpoint verifier key (signed-note tools): {vkey}" for vkey in self.note_keys),
            f"approvals: {self.approvals} signed statement(s) verified with the approvers' registered keys",
            f"checkpoints: {len(self.checkpoints)} signed by the ledger (origin {self.origin}, sizes {sizes}); "
            f"{self.consistency_proofs} consistency proof(s) to the latest verified",
            *([self.witnessing] if self.witnessing else []),
            f"inclusion: all {self.events} events proven in the tree of size {self.tree_size} "
            f"(root {self.root_hash}, {self.proof_nodes} proof nodes)",
            f"files: {self.files} report, manifest and provenance files match the digests the ledger signed",
            f"verified in {self.seconds:.2f} s ({rate:,.0f} events/s, {self.workers} worker(s), "
            f"event signatures by {self.ed25519})",
        ]


# -- small primitives (RFC 8032, RFC 8785, RFC 9162, C2SP signed notes, DSSE) -----


def _public_key(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


SignatureCheck = Callable[[bytes, bytes], bool]
"""``check(signature, message) -> bool`` for one public key."""


def signature_check(raw: bytes, fast: bool) -> SignatureCheck:
    """An Ed25519 check with the key ``raw``: libsodium when ``fast`` and PyNaCl is installed, else OpenSSL.

    Both implement RFC 8032 verification and agree on every signature the
    ledger makes; libsodium is the stricter of the two (it also refuses
    small-order keys and points), so it never accepts what OpenSSL refuses.
    """
    if fast and _sodium_open is not None:
        sodium_open = _sodium_open

        def sodium(signature: bytes, message: bytes) -> bool:
            try:
                sodium_open(signature + message, raw)
            except (_SodiumRefused, ValueError, TypeError):
                return False
            return True

        return sodium
    public = _public_key(raw)
    return lambda signature, message: _verifies(public, signature, message)


def ed25519_library(fast: bool) -> str:
    """Which library checks event signatures."""
    return "libsodium (PyNaCl)" if fast and _sodium_open is not None else "OpenSSL (cryptography)"


def _verifies(public: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _b64(text: Any) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _pem_raw(pem: str | bytes) -> bytes | None:
    """The raw 32 bytes of an Ed25519 public key in PEM, or None."""
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii") if isinstance(pem, str) else pem)
    except (ValueError, TypeError, UnicodeEncodeError):
        return None
    if not isinstance(key, Ed25519PublicKey):
        return None
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(raw: bytes) -> str:
    """First 16 hex digits of sha256 of the raw public key (the ledger's key id)."""
    return hashlib.sha256(raw).hexdigest()[:16]


def _es_number(value: float) -> str:
    """A finite double as ECMAScript writes it (RFC 8785 section 3.2.2.3)."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + int(exponent or 0) - (len(whole + fraction) - len((whole + fraction).lstrip("0")))
    digits = digits.rstrip("0") or "0"
    k, n = len(digits), point
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        exp = f"e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
        text = (digits if k == 1 else digits[0] + "." + digits[1:]) + exp
    return sign + text


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) canonical JSON of a JSON value, as UTF-8 bytes."""
    return _jcs(value).encode("utf-8")


def _jcs(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value) if abs(value) <= 2**53 else _es_number(float(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("NaN and infinities have no canonical JSON form")
        return _es_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(_jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _jcs(value[k]) for k in keys) + "}"
    raise ValueError(f"{type(value).__name__} is not a JSON value")


def leaf_hash(event_hash: bytes) -> bytes:
    """RFC 9162 leaf hash of an event: sha256(0x00 || event hash)."""
    return hashlib.sha256(b"\x00" + event_hash).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: sha256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: does ``path`` prove ``leaf`` at ``index`` in the tree with ``root``?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2: does ``proof`` show tree ``new_size`` extends tree ``old_size``?"""
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges of the RFC 9162 audit path of leaf ``index`` in a tree of ``size``, bottom up."""
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    ranges.reverse()
    return ranges


class _Gap(Exception):
    def __init__(self, leaf: int) -> None:
        super().__init__(leaf)
        self.leaf = leaf


class MerkleNodes:
    """Complete-subtree hashes known from events and proof nodes; any subtree hash is derived from them."""

    def __init__(self, known: dict[tuple[int, int], bytes]) -> None:
        self.known = known

    def subtree(self, lo: int, hi: int) -> bytes:
        """RFC 9162 MTH of leaves [lo, hi); raises _Gap naming a leaf nothing covers."""
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            level = n.bit_length() - 1
            found = self.known.get((level, lo >> level))
            if found is not None:
                return found
            if n == 1:
                raise _Gap(lo)
            k = n >> 1
            h = node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))
            self.known[(level, lo >> level)] = h
            return h
        k = _split(n)
        return node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def audit_path(self, index: int, size: int) -> list[bytes]:
        """The standard RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
        return [self.subtree(lo, hi) for lo, hi in inclusion_ranges(index, size)]


def note_key_hash(name: str, raw: bytes) -> bytes:
    """C2SP signed-note key hash: sha256(name || 0x0A || 0x01 || public key)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n\x01" + raw).digest()[:4]


def verifier_key(name: str, raw: bytes) -> str:
    """The signed-note verifier key string (what golang.org/x/mod/sumdb/note is configured with)."""
    encoded = base64.b64encode(b"\x01" + raw).decode("ascii")
    return f"{name}+{note_key_hash(name, raw).hex()}+{encoded}"


# -- witnesses: C2SP tlog-cosignature (cosignature/v1) and tlog-policy, as in
# domain.integrity.cosignature and domain.integrity.witness_policy ----------------

COSIGNATURE_TYPE = 0x04


def cosigner_key_hash(name: str, raw: bytes) -> bytes:
    """The key ID of an Ed25519 cosignature/v1 key: sha256(name || 0x0A || 0x04 || public key)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n\x04" + raw).digest()[:4]


def _strict_b64(text: str) -> bytes | None:
    raw = _b64(text)
    return raw if raw is not None and base64.b64encode(raw).decode("ascii") == text else None


def _vkey(vkey: str, kind: int) -> tuple[str, bytes] | None:
    """(key name, raw key) of a signed-note verifier key of signature type ``kind``, or None."""
    name, _, rest = vkey.partition("+")
    hash_hex, _, encoded = rest.partition("+")
    raw = _strict_b64(encoded)
    if (
        not name
        or any(c.isspace() or c < " " for c in name)
        or not re.fullmatch(r"[0-9a-f]{8}", hash_hex)
        or raw is None
        or len(raw) != 33
        or raw[0] != kind
    ):
        return None
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([kind]) + raw[1:]).digest()[:4]
    return (name, raw[1:]) if digest.hex() == hash_hex else None


@dataclass(frozen=True)
class WitnessPolicy:
    """A C2SP tlog-policy: witnesses (policy name -> cosigner key name, raw key), groups and the quorum."""

    witnesses: dict[str, tuple[str, bytes]]
    groups: dict[str, tuple[int, tuple[str, ...]]]
    quorum: str

    def met(self, cosigned: set[str]) -> bool:
        """Whether cosignatures by the witnesses named in ``cosigned`` meet the quorum."""

        def holds(name: str) -> bool:
            group = self.groups.get(name)
            return name in cosigned if group is None else sum(map(holds, group[1])) >= group[0]

        return self.quorum == "none" or holds(self.quorum)


def parse_witness_policy(text: str) -> WitnessPolicy:
    """Parse tlog-policy text; ValueError naming the first bad line."""
    witnesses: dict[str, tuple[str, bytes]] = {}
    groups: dict[str, tuple[int, tuple[str, ...]]] = {}
    seen: set[bytes] = set()
    quorum = None
    for number, line in enumerate(text.split("\n"), start=1):
        words = [w for w in re.split(r"[ \t]+", line.strip()) if w]
        bad = f"witness policy line {number}"
        if any(c < " " and c != "\t" for c in line):
            raise ValueError(f"{bad}: contains a control character")
        if not words or words[0].startswith("#"):
            continue
        kind, args = words[0], words[1:]
        defined = set(witnesses) | set(groups) | {"none"}
        if kind in ("log", "witness") and len(args) in ((1, 2) if kind == "log" else (2, 3)):
            key = _vkey(args[0] if kind == "log" else args[1], 0x01 if kind == "log" else COSIGNATURE_TYPE)
            if key is None or (kind == "witness" and args[0] in defined) or key[1] in seen:
                raise ValueError(f"{bad}: not a valid {kind} line")
            seen.add(key[1])
            if kind == "witness":
                witnesses[args[0]] = key
        elif kind == "group" and len(args) >= 3:
            members = tuple(args[2:])
            k = {"all": len(members), "any": 1}.get(args[1])
            if k is None and re.fullmatch(r"[1-9][0-9]{0,3}", args[1]) and int(args[1]) <= len(members):
                k = int(args[1])
            if (
                args[0] in defined
                or k is None
                or len(set(members)) != len(members)
                or not set(members) <= set(witnesses) | set(groups)
            ):
                raise ValueError(f"{bad}: not a valid group line")
            groups[args[0]] = (k, members)
        elif kind == "quorum" and len(args) == 1 and quorum is None and args[0] in defined:
            quorum = args[0]
        else:
            raise ValueError(f"{bad}: not a valid log, witness, group or quorum line")
    if quorum is None:
        raise ValueError("the witness policy has no quorum line")
    return WitnessPolicy(witnesses, groups, quorum)


def cosigned_by(body: str, signatures: list[tuple[str, bytes, bytes]], policy: WitnessPolicy) -> set[str]:
    """The policy's witnesses with a valid cosignature/v1 line on the checkpoint ``body``; ValueError when a
    line bears a policy witness's name and key ID but does not verify."""
    found = set()
    for policy_name, (key_name, raw) in policy.witnesses.items():
        key_hash = cosigner_key_hash(key_name, raw)
        for name, line_hash, signature in signatures:
            if (name, line_hash) != (key_name, key_hash):
                continue
            timestamp = int.from_bytes(signature[:8], "big")
            message = f"cosignature/v1\ntime {timestamp}\n{body}".encode()
            if (
                len(signature) != 72
                or not 0 < timestamp < 2**63
                or not _verifies(_public_key(raw), signature[8:], message)
            ):
                raise ValueError(f"its cosignature by witness {policy_name} ({key_name}) does not verify")
            found.add(policy_name)
    return found


def _parse_checkpoint(text: str) -> tuple[str, int, bytes, str, list[tuple[str, bytes, bytes]]]:
    """(origin, size, root, body, signatures) of a C2SP tlog-checkpoint signed note; ValueError if malformed."""
    if not text.endswith("\n") or re.search(r"[\x00-\x09\x0b-\x1f]", text):
        raise ValueError("not a signed note (control characters or no final newline)")
    split = text.rfind("\n\n")
    if split < 0:
        raise ValueError("no blank line before the signatures")
    body, block = text[: split + 1], text[split + 2 :]
    lines = body[:-1].split("\n")
    if len(lines) < 3 or not all(lines) or not re.fullmatch(r"0|[1-9][0-9]*", lines[1]):
        raise ValueError("the body is not origin, tree size and root hash lines")
    root = _b64(lines[2])
    if root is None or len(root) != 32:
        raise ValueError("the root hash is not base64 of 32 bytes")
    signatures = []
    for line in block[:-1].split("\n") if block else []:
        name, sep, encoded = line.removeprefix("\u2014 ").partition(" ")
        raw = _b64(encoded)
        if not line.startswith("\u2014 ") or not sep or raw is None or len(raw) <= 4:
            raise ValueError(f"malformed signature line {line!r}")
        signatures.append((name, raw[:4], raw[4:]))
    if not signatures:
        raise ValueError("no signature lines")
    return lines[0], int(lines[1]), root, body, signatures


def _pae(payload_type: str, body: bytes) -> bytes:
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(body), body)


# -- reading the archive safely ----------------------------------------------------


def _check_name(name: str) -> str | None:
    """Why a member name is unsafe, or None."""
    if not name or len(name) > 400:
        return "an empty or overlong name"
    if "\\" in name or "\x00" in name or any(ord(c) < 32 for c in name):
        return "backslashes or control characters"
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "an absolute path"
    parts = name.split("/")
    if ".." in parts or "." in parts or "" in parts[:-1]:
        return "'..', '.' or empty path components"
    return None


class Archive:
    """A bundle opened for reading: every member checked against the limits before anything is read."""

    def __init__(self, path: Path, limits: Limits) -> None:
        where = path.name
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise BundleProblem(where, f"cannot be read: {exc.strerror or exc}") from None
        if size > limits.max_bundle_bytes:
            raise BundleProblem(where, f"is {size} bytes, over the limit of {limits.max_bundle_bytes} bytes")
        try:
            self.zip = zipfile.ZipFile(path)
            infos = self.zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
            raise BundleProblem(where, f"is not a readable zip archive (malformed or truncated): {exc}") from None
        if len(infos) > limits.max_members:
            raise BundleProblem(where, f"has {len(infos)} members, over the limit of {limits.max_members}")
        self.members: dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in infos:
            name = info.filename
            unsafe = _check_name(name)
            if unsafe is not None:
                raise BundleProblem(f"{where} member {name!r}", f"refused: the name has {unsafe}")
            if name in self.members:
                raise BundleProblem(f"{where} member {name!r}", "refused: the name occurs twice")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise BundleProblem(f"{where} member {name!r}", "refused: it is a symbolic link")
            if info.flag_bits & 0x1:
                raise BundleProblem(f"{where} member {name!r}", "refused: it is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise BundleProblem(f"{where} member {name!r}", "refused: unsupported compression method")
            if info.file_size > limits.max_member_bytes:
                raise BundleProblem(
                    f"{where} member {name!r}",
                    f"refused: {info.file_size} bytes, over the limit of {limits.max_member_bytes}",
                )
            if info.file_size > limits.ratio_from_bytes and info.file_size > limits.max_ratio * max(
                info.compress_size, 1
            ):
                raise BundleProblem(
                    f"{where} member {name!r}",
                    f"refused: expands {info.compress_size} bytes to {info.file_size} "
                    f"(ratio over {limits.max_ratio}: a zip bomb)",
                )
            total += info.file_size
            if total > limits.max_total_bytes:
                raise BundleProblem(where, f"expands to more than {limits.max_total_bytes} bytes")
            if name.endswith("/"):
                continue
            if not LAYOUT.fullmatch(name):
                raise BundleProblem(f"{where} member {name!r}", "refused: not part of the bundle layout")
            self.members[name] = info
        for required in (INDEX, EVENTS, INCLUSION, CONSISTENCY, KEYRING_LINES):
            if required not in self.members:
                raise BundleProblem(where, f"has no {required}")

    def names(self, prefix: str) -> list[str]:
        """Member names under ``prefix``, sorted."""
        return sorted(n for n in self.members if n.startswith(prefix))

    def read(self, name: str) -> bytes:
        """A member's bytes, never more than its declared size (CRC checked by zipfile)."""
        info = self.members.get(name)
        if info is None:
            raise BundleProblem(name, "is missing from the bundle")
        try:
            with self.zip.open(info) as handle:
                data = handle.read(info.file_size + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise BundleProblem(name, f"is damaged in the archive: {exc}") from None
        if len(data) != info.file_size:
            raise BundleProblem(name, "does not have the size the archive declares")
        return data

    def json(self, name: str) -> Any:
        """A member parsed as JSON."""
        try:
            return json.loads(self.read(name))
        except ValueError as exc:
            raise BundleProblem(name, f"is not valid JSON: {exc}") from None

    def lines(self, name: str, block: int = 1024 * 1024) -> Iterator[bytes]:
        """A member's lines (without their newline), decompressed a block at a time; BundleProblem when the
        last line is cut off or the member is damaged. Never more than its declared size is read."""
        info = self.members.get(name)
        if info is None:
            raise BundleProblem(name, "is missing from the bundle")
        rest, seen = b"", 0
        try:
            with self.zip.open(info) as handle:
                while True:
                    data = handle.read(min(block, info.file_size + 1 - seen))
                    if not data:
                        break
                    seen += len(data)
                    if seen > info.file_size:
                        raise BundleProblem(name, "does not have the size the archive declares")
                    parts = (rest + data).split(b"\n")
                    rest = parts.pop()
                    yield from parts
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise BundleProblem(name, f"is damaged in the archive: {exc}") from None
        if seen != info.file_size:
            raise BundleProblem(name, "does not have the size the archive declares")
        if rest or not seen:
            raise BundleProblem(name, "is empty or its last line is cut off (truncated)")

    def close(self) -> None:
        """Release the file."""
        self.zip.close()


# -- key windows -------------------------------------------------------------------

Window = tuple[int, "int | None", "int | None", "int | None"]
"""A ledger key's (first position, last position or None while current, compromised since, revoked at)."""


def describe_window(window: Window) -> str:
    """The window in words (as ``domain.integrity.key_lifetimes.KeyWindow.describe``)."""
    first, last = window[0], window[1]
    return f"positions {first} onward (current)" if last is None else f"positions {first} to {last}"


def window_refusal(key_id: str, position: int, window: Window) -> str | None:
    """Why ``key_id`` may not sign at ``position`` (as ``KeyWindow.refusal``), or None when it may."""
    first, last, compromised, revoked_at = window
    if first <= position and (last is None or position <= last) and (compromised is None or position <= compromised):
        return None
    if compromised is not None and position > compromised:
        return (
            f"signed by ledger key {key_id} after its compromise at position {compromised} "
            f"(revoked at position {revoked_at}; its window: {describe_window(window)})"
        )
    return f"signed by ledger key {key_id} at position {position}, outside the key's window ({describe_window(window)})"


# -- checking event lines (in worker processes) --------------------------------------


def _where(number: int, m: re.Match[bytes]) -> str:
    return (
        f"{EVENTS} line {number} (position {int(m.group(1))}, {m.group(3).decode()} {m.group(4).decode()} "
        f"version {int(m.group(5))})"
    )


_OPENED = frozenset(topic.encode() for topic in OPENED_TOPICS)


def check_line(
    number: int, line: bytes, keys: dict[bytes, SignatureCheck], windows: dict[bytes, Window] | None = None
) -> tuple[Any, ...]:
    """Check one line of events.jsonl; return its facts or raise BundleProblem naming it.

    The facts are (line, position, leaf index, aggregate id, aggregate type,
    version, topic, hash, prev_hash, leaf hash, envelope bytes of the topics
    the verifier reads or None, key id, then the aggregate id, hash and
    prev_hash as raw bytes). This runs once per event, so the
    message of a problem is only put together when there is one. An event
    signed outside its key's window is refused here; one signed after a recorded
    compromise passes, for :meth:`Verification._events` to name them all.
    """
    m = _LINE.match(line)
    if m is None or line[-1:] != b"}":
        raise BundleProblem(f"{EVENTS} line {number}", "is not an event line of this bundle format (damaged or edited)")
    position, leaf_index, agg_type, agg_id, version, topic, hash_hex, key_id, signature = m.groups()
    envelope = line[m.end() : -1]
    digest = hashlib.sha256(envelope).digest()
    if digest.hex().encode() != hash_hex:
        raise BundleProblem(_where(number, m), "the hash does not match the envelope bytes (the event was edited)")
    check = keys.get(key_id)
    if check is None:
        raise BundleProblem(
            _where(number, m), f"signed by key {key_id.decode()}, which is not a ledger key of this bundle"
        )
    if not check(base64.b64decode(signature), digest):
        raise BundleProblem(_where(number, m), f"the signature does not verify with ledger key {key_id.decode()}")
    window = None if windows is None else windows.get(key_id)
    if window is not None:
        at = int(position)
        if (at < window[0] or (window[1] is not None and at > window[1])) and (window[2] is None or at <= window[2]):
            raise BundleProblem(_where(number, m), str(window_refusal(key_id.decode(), at, window)))
    head, tail = _ENVELOPE_HEAD.match(envelope), _ENVELOPE_TAIL.search(envelope, max(0, len(envelope) - 400))
    if head is None or tail is None:
        raise BundleProblem(_where(number, m), "the envelope is not in the ledger's canonical form")
    if head.group(1) != agg_id or head.group(2) != agg_type:
        raise BundleProblem(_where(number, m), "the envelope names another aggregate than the line")
    if tail.group(2) != topic or tail.group(3) != version:
        raise BundleProblem(_where(number, m), "the envelope's type or version differs from the line's")
    return (
        number,
        int(position),
        int(leaf_index),
        agg_id.decode(),
        agg_type.decode(),
        int(version),
        topic.decode(),
        hash_hex.decode(),
        tail.group(1).decode(),
        hashlib.sha256(b"\x00" + digest).digest(),
        envelope if topic in _OPENED else None,
        key_id,
        binascii.unhexlify(agg_id.replace(b"-", b"")),
        digest,
        binascii.unhexlify(tail.group(1)),
    )


def _check_block(
    first: int, lines: list[bytes], fast: bool, keys: dict[str, bytes], windows: dict[str, Window]
) -> tuple[list[tuple[Any, ...]], BundleProblem | None]:
    """Worker: check ``lines``, numbered from ``first``; stop at the first problem."""
    publics = {k.encode(): signature_check(v, fast) for k, v in keys.items()}
    spans = {k.encode(): v for k, v in windows.items()}
    facts = []
    for number, line in enumerate(lines, start=first):
        try:
            facts.append(check_line(number, line, publics, spans))
        except BundleProblem as problem:
            return facts, problem
    return facts, None


BLOCK_LINES = 2_000
"""Lines sent to a worker at once: the lines read ahead of the checks stay a few blocks per worker."""


def _blocks(lines: Iterator[bytes], size: int = BLOCK_LINES) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, lines) of consecutive blocks."""
    block: list[bytes] = []
    first = 1
    for line in lines:
        block.append(line)
        if len(block) == size:
            yield first, block
            first, block = first + size, []
    if block:
        yield first, block


def _checked_blocks(
    lines: Iterator[bytes], keys: dict[str, bytes], windows: dict[str, Window], workers: int, fast: bool
) -> Iterator[tuple[list[bytes], list[tuple[Any, ...]]]]:
    """Each block of lines with the facts its checks established, in order; the first problem raises.

    Worker processes check the blocks; at most a few blocks per worker are read
    ahead, so the bundle is never held in memory whole.
    """
    if workers <= 1:
        for first, block in _blocks(lines):
            facts, problem = _check_block(first, block, fast, keys, windows)
            if problem is not None:
                raise problem
            yield block, facts
        return
    fork = "fork" in get_all_start_methods()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork") if fork else None)
    try:
        pending: deque[tuple[list[bytes], Future[tuple[list[tuple[Any, ...]], BundleProblem | None]]]] = deque()
        for first, block in _blocks(lines):
            pending.append((block, pool.submit(_check_block, first, block, fast, keys, windows)))
            while len(pending) > 2 * workers:
                yield _result(*pending.popleft())
        while pending:
            yield _result(*pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _result(
    block: list[bytes], future: Future[tuple[list[tuple[Any, ...]], BundleProblem | None]]
) -> tuple[list[bytes], list[tuple[Any, ...]]]:
    facts, problem = future.result()
    if problem is not None:
        raise problem
    return block, facts


# -- the Merkle tree, folded left to right -------------------------------------------


class MerkleFold:
    """The RFC 9162 hash of leaves [lo, hi), from complete subtrees given left to right.

    Each subtree (level, index, hash) must start where the ones before it end;
    equal siblings merge as they arrive, so what is kept is one subtree per
    level (the compact range), however many leaves pass.
    """

    def __init__(self, lo: int = 0) -> None:
        self.stack: list[tuple[int, int, bytes]] = []
        self.next = lo

    def push(self, level: int, index: int, digest: bytes) -> None:
        """Add the next complete subtree; _Gap when it does not start where the last one ended."""
        start = index << level
        if start != self.next:
            raise _Gap(self.next) if start > self.next else _Overlap(level, index)
        self.next = (index + 1) << level
        stack = self.stack
        while index & 1 and stack and stack[-1][0] == level and stack[-1][1] == index - 1:
            digest = node_hash(stack.pop()[2], digest)
            level, index = level + 1, index >> 1
        stack.append((level, index, digest))

    def root(self, hi: int) -> bytes:
        """The hash of the leaves up to ``hi`` (all of them given); _Gap naming the first leaf missing."""
        if self.next != hi:
            raise _Gap(self.next)
        if not self.stack:
            return hashlib.sha256(b"").digest()
        digest = self.stack[-1][2]
        for _, _, left in reversed(self.stack[:-1]):
            digest = node_hash(left, digest)
        return digest


class _Overlap(Exception):
    def __init__(self, level: int, index: int) -> None:
        super().__init__(level, index)
        self.level, self.index = level, index


Entry = tuple[int, int, int, bytes]
"""A proof entry in leaf order: (first leaf it covers, level, index, hash) of a proof node, or
(leaf, -1, position, b"") of an event the proof lists."""


class InclusionCheck:
    """Step 7 as the events stream past: the proof's entries (listed events and proof nodes, in leaf order)
    are read in step with events.jsonl, and the events' leaves with the proof nodes fold into the root."""

    def __init__(self, entries: Iterator[Entry], size: int, root: bytes) -> None:
        self.entries = entries
        self.size, self.root = size, root
        self.fold = MerkleFold()
        self.nodes = 0
        self.listed: tuple[int, int] | None = None
        self.upcoming: Entry | None = None

    def _next(self) -> Entry | None:
        entry, self.upcoming = (self.upcoming, None) if self.upcoming is not None else (next(self.entries, None), None)
        return entry

    def _node(self, first: int, level: int, index: int, digest: bytes, event_leaf: int | None) -> None:
        end = (index + 1) << level
        if event_leaf is not None and first <= event_leaf < end:
            raise BundleProblem(
                INCLUSION, f"proof node ({level}, {index}) stands in for the event at leaf {event_leaf}"
            )
        self.nodes += 1
        self._push(level, index, digest)

    def _push(self, level: int, index: int, digest: bytes) -> None:
        try:
            self.fold.push(level, index, digest)
        except _Gap as gap:
            raise BundleProblem(
                INCLUSION,
                f"no event and no proof node covers leaf {gap.leaf}: the proofs are incomplete (truncated?)",
            ) from None
        except _Overlap as overlap:
            raise BundleProblem(
                INCLUSION, f"proof node ({overlap.level}, {overlap.index}) covers leaves that are already covered"
            ) from None

    def event(self, number: int, leaf: int, position: int, leaf_hash: bytes) -> None:
        """The next event of events.jsonl (line ``number``)."""
        if leaf >= self.size:
            raise BundleProblem(INCLUSION, f"the latest checkpoint (size {self.size}) does not cover leaf {leaf}")
        while True:
            entry = self._next()
            if entry is None:
                raise BundleProblem(
                    f"{EVENTS} line {number} (position {position})",
                    "has no inclusion proof in proofs/inclusion.json (the proofs are truncated or the event was added)",
                )
            first, level, index, digest = entry
            if level >= 0 and first <= leaf:
                self._node(first, level, index, digest, leaf)
                continue
            break
        if level < 0 and first < leaf:
            raise BundleProblem(
                INCLUSION,
                f"proves the event at leaf {first} (position {index}), which events.jsonl "
                "lacks: an event was removed from the bundle",
            )
        if level >= 0 or (first, index) != (leaf, position):
            raise BundleProblem(
                f"{EVENTS} line {number} (position {position})",
                f"its leaf {leaf} is not among the leaves the inclusion proof covers: the event was added or moved",
            )
        self._push(0, leaf, leaf_hash)

    def finish(self) -> None:
        """After the last event: the remaining proof nodes, then the root against the latest checkpoint."""
        while (entry := self._next()) is not None:
            first, level, index, digest = entry
            if level < 0:
                raise BundleProblem(
                    INCLUSION,
                    f"proves the event at leaf {first} (position {index}), which events.jsonl "
                    "lacks: an event was removed from the bundle",
                )
            self._node(first, level, index, digest, None)
        try:
            root = self.fold.root(self.size)
        except _Gap as gap:
            raise BundleProblem(
                INCLUSION,
                f"no event and no proof node covers leaf {gap.leaf}: the proofs are incomplete (truncated?)",
            ) from None
        if root != self.root:
            raise BundleProblem(
                INCLUSION,
                f"the events and proof nodes hash to root {root.hex()}, but the latest checkpoint "
                f"signs {self.root.hex()}: an event's hash or position differs from the ledger's log",
            )


def _proof_node(entry: Any, size: int) -> Entry:
    """A proof node entry ``[level, index, hex]`` checked against the tree of ``size`` leaves."""
    try:
        level, node, digest = int(entry[0]), int(entry[1]), bytes.fromhex(entry[2])
    except (TypeError, ValueError, IndexError, KeyError):
        raise BundleProblem(INCLUSION, f"proof node {str(entry)[:80]} is malformed") from None
    if not 0 <= level < 64 or node < 0 or (node + 1) << level > size or len(digest) != 32:
        raise BundleProblem(INCLUSION, f"proof node {str(entry)[:80]} is not a node of the tree of size {size}")
    return node << level, level, node, digest


def _listed_leaf(entry: Any, at: int) -> Entry:
    if not isinstance(entry, list) or len(entry) != 2 or not all(type(v) is int for v in entry):
        raise BundleProblem(INCLUSION, f"leaf entry {at} is malformed")
    return entry[0], -1, entry[1], b""


# -- the checks, in order ----------------------------------------------------------

KEYRING_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "urn:mlledger:ledger-keyring"))
"""The ledger keyring's fixed aggregate id."""

_KEYRING_MARK = b'"aggregate_type":"LedgerKeyring"'
_LEAF_ENTRY = re.compile(rb"\[(0|[1-9][0-9]{0,18}),([1-9][0-9]{0,18})\]")
_NODE_ENTRY = re.compile(rb'\[(0|[1-9][0-9]?),(0|[1-9][0-9]{0,18}),"([0-9a-f]{64})"\]')
ZERO_DIGEST = bytes(32)
_HEAD = struct.Struct(">32sQH")
"""An aggregate's chain head: its last event's hash, version and type (as a small number)."""
_COMMITTED = struct.Struct(">Q32s")
"""One event in the export record's commitment: position (8 bytes, big-endian), hash."""


def _fact_where(fact: tuple[Any, ...]) -> str:
    return f"{EVENTS} line {fact[0]} (position {fact[1]}, {fact[4]} {fact[3]} version {fact[5]})"


@dataclass
class _Facts:
    """What the pass over events.jsonl established, kept for the later checks (nothing per event)."""

    opened: dict[int, tuple[int, str, dict[str, Any]]] = field(default_factory=dict)
    """(position, aggregate id, envelope) of each event the verifier reads, by line number."""
    committed: Any = field(default_factory=hashlib.sha256)
    """SHA-256 over (position, hash) of every event but the export's own, as the export record commits."""
    count: int = 0
    foreign_export: int | None = None
    """The line of the first event of another export, if any."""
    run_events: dict[str, set[tuple[int, int, str]]] = field(default_factory=dict)
    """(position, version, hash) of the events of each run whose manifest the bundle holds."""
    keyring_lines: list[bytes] = field(default_factory=list)
    tainted: list[tuple[Any, ...]] = field(default_factory=list)
    audit_leaf: int | None = None
    """The leaf of the event at the position an audit path was asked for."""


class Verification:
    """One run of every check over one archive."""

    def __init__(
        self,
        archive: Archive,
        anchors: Sequence[bytes],
        workers: int,
        fast: bool = True,
        witness_policy: str | None = None,
        audit_position: int | None = None,
    ) -> None:
        self.archive = archive
        self.anchors = list(anchors)
        self.workers = max(1, workers)
        self.fast = fast
        self.summary = Summary(workers=self.workers, ed25519=ed25519_library(fast))
        self.witness_policy = witness_policy
        self.notes: dict[int, tuple[str, list[tuple[str, bytes, bytes]]]] = {}
        self.audit_position = audit_position
        self.audit_leaf: int | None = None
        self._proof_entries: Callable[[], Iterator[Entry]] = lambda: iter(())

    def run(self) -> Summary:
        """Every check; the first problem raises :class:`BundleProblem`."""
        started = time.perf_counter()
        index = self._index()
        keys = self._keys()
        roots = self._checkpoints(index, keys)
        self._witnessed()
        facts = self._events(index, keys, roots)
        self._approvals(facts)
        self._consistency(roots)
        self._export_record(index, facts, keys)
        self.audit_leaf = facts.audit_leaf
        self.summary.seconds = time.perf_counter() - started
        return self.summary

    # 0. the index ---------------------------------------------------------------
    def _index(self) -> dict[str, Any]:
        index = self.archive.json(INDEX)
        if not isinstance(index, dict) or index.get("format") not in FORMATS:
            raise BundleProblem(INDEX, f"is not an index of a {FORMAT} bundle")
        for key in ("export_id", "model", "origin"):
            if not isinstance(index.get(key), str) or not index[key]:
                raise BundleProblem(INDEX, f"has no {key}")
        self.summary.origin = index["origin"]
        return index

    # 2. keys ---------------------------------------------------------------------
    def _keys(self) -> dict[str, bytes]:
        """The key chain, from keys/keyring.jsonl; the pass over events.jsonl then holds it to be exactly
        the keyring's events there (so no event is checked with a key the ledger did not record)."""
        keys: dict[str, bytes] = {}
        pems: dict[str, str] = {}
        windows: dict[str, Window] = {}
        current: str | None = None
        for number, line in enumerate(self.archive.lines(KEYRING_LINES), start=1):
            where = f"{KEYRING_LINES} line {number} (ledger keyring)"
            m = _LINE.match(line)
            if m is None or not line.endswith(b"}"):
                raise BundleProblem(where, "is not an event line of this bundle format")
            envelope = line[m.end() : -1]
            digest = hashlib.sha256(envelope).digest()
            if digest.hex().encode() != m.group(7):
                raise BundleProblem(where, "the hash does not match the envelope bytes (a key event was edited)")
            try:
                fields = json.loads(envelope)
                payload = fields["payload"]
                if not isinstance(payload, dict):
                    raise TypeError("the payload is not an object")
            except (ValueError, KeyError, TypeError):
                raise BundleProblem(where, "the key event cannot be read") from None
            if m.group(4).decode() != KEYRING_ID:
                raise BundleProblem(where, "a key event outside the ledger's keyring")
            topic, signer_id, position = m.group(6).decode(), m.group(8).decode(), int(m.group(1))
            if topic == KEYRING_REVOKED:
                revoked, since = payload.get("key_id"), payload.get("compromised_since")
                if revoked not in windows or revoked == current or type(since) is not int or since < 0:
                    raise BundleProblem(where, "the revocation names no retired ledger key or no position")
                if (
                    current is None
                    or signer_id != current
                    or not _verifies(_public_key(keys[current]), base64.b64decode(m.group(9)), digest)
                ):
                    raise BundleProblem(where, "the revocation is not signed by the current ledger key")
                first, last, _, _ = windows[revoked]
                windows[revoked] = (first, last, since, position)
                continue
            try:
                pem = str(payload["public_key_pem"])
            except (KeyError, TypeError):
                raise BundleProblem(where, "the key event cannot be read") from None
            raw = _pem_raw(pem)
            if raw is None or key_id_of(raw) != payload.get("key_id"):
                raise BundleProblem(where, "the key event's public key is not the Ed25519 key its id names")
            if topic == KEYRING_ESTABLISHED:
                if keys:
                    raise BundleProblem(where, "a second genesis key")
                signer = raw if signer_id == key_id_of(raw) else None
            elif topic == KEYRING_ROTATED:
                if current is None:
                    raise BundleProblem(where, "a rotation before the genesis key")
                if payload.get("previous_key_id") != current:
                    raise BundleProblem(where, "the rotation replaces a key that is not the current ledger key")
                signer = keys[current] if signer_id == current else None
            else:
                raise BundleProblem(where, f"unexpected event {topic} in the keyring")
            if signer is None or not _verifies(_public_key(signer), base64.b64decode(m.group(9)), digest):
                raise BundleProblem(
                    where,
                    "the key event is not signed by the key before it (genesis: by itself): the key chain is broken",
                )
            new_id = key_id_of(raw)
            if current is not None:
                first, _, since, revoked_at = windows[current]
                windows[current] = (first, position, since, revoked_at)
            windows[new_id] = (position if current is None else position + 1, None, None, None)
            keys[new_id] = raw
            pems[new_id] = pem
            current = new_id
        if not keys:
            raise BundleProblem(EVENTS, "holds no ledger keyring (no genesis key event)")
        files = {name.removeprefix("keys/ledger/").removesuffix(".pem") for name in self.archive.names("keys/ledger/")}
        for kid in sorted(files | set(keys)):
            name = f"keys/ledger/{kid}.pem"
            if kid not in keys:
                raise BundleProblem(name, "is not a key of the ledger keyring recorded in events.jsonl")
            if kid not in files:
                raise BundleProblem(name, "is missing: every ledger key of the keyring is shipped as PEM")
            if self.archive.read(name) != pems[kid].encode("ascii"):
                raise BundleProblem(name, f"is not the public key the ledger keyring records for key id {kid}")
        if self.anchors and not any(anchor in keys.values() for anchor in self.anchors):
            raise BundleProblem("keys", "none of the trusted public keys you gave is in this bundle's key chain")
        self.summary.anchored = bool(self.anchors)
        self.summary.ledger_keys = list(keys)
        self.summary.key_windows = windows
        return keys

    # 3, 4 and 7. every event, order, chains and inclusion, in one pass -------------------------
    def _events(self, index: dict[str, Any], keys: dict[str, bytes], roots: dict[int, bytes]) -> _Facts:
        windows = self.summary.key_windows
        revoked = {k.encode(): w for k, w in windows.items() if w[2] is not None}
        facts = _Facts()
        manifests = {
            name.removeprefix("manifests/").removesuffix(".json")
            for name in self.archive.names("manifests/")
            if not name.endswith(".provenance.json")
        }
        export_id = index["export_id"]
        inclusion = self._inclusion(roots)
        heads: dict[bytes, bytes] = {}
        types: dict[str, int] = {}
        by_type: dict[str, int] = {}
        last_position = last_leaf = -1
        held: tuple[int, int, int, bytes] | None = None
        events = 0
        lines = self.archive.lines(EVENTS)
        for block, checked in _checked_blocks(lines, keys, windows, self.workers, self.fast):
            for line, fact in zip(block, checked, strict=True):
                number, position, leaf, aggregate_id, agg_type, version, _, hash_hex, _, leaf_hash, opened, key = fact[
                    :12
                ]
                ident, digest, prev = fact[12:]
                if revoked and key in revoked and position > revoked[key][2]:
                    facts.tainted.append(fact)
                if opened is not None:
                    try:
                        facts.opened[number] = (position, aggregate_id, json.loads(opened))
                    except ValueError:
                        raise BundleProblem(f"{EVENTS} line {number}", "the envelope is not JSON") from None
                if _KEYRING_MARK in line[:300]:
                    facts.keyring_lines.append(line)
                # 4. ledger order, and each aggregate's chain (kept as 16-byte id -> packed last hash, version, type)
                if position <= last_position or leaf <= last_leaf:
                    raise BundleProblem(
                        _fact_where(fact),
                        f"comes after position {last_position}: the events are not in ledger order "
                        "(lines were swapped or moved)",
                    )
                last_position, last_leaf = position, leaf
                type_code = types.get(agg_type)
                if type_code is None:
                    type_code = types[agg_type] = len(types)
                head = heads.get(ident)
                if head is None:
                    expected_version, expected_prev = 1, ZERO_DIGEST
                    by_type[agg_type] = by_type.get(agg_type, 0) + 1
                else:
                    expected_prev, last_version, head_type = _HEAD.unpack(head)
                    expected_version = last_version + 1
                    if head_type != type_code:
                        earlier = next(name for name, code in types.items() if code == head_type)
                        raise BundleProblem(_fact_where(fact), f"the aggregate was a {earlier} in earlier lines")
                if version != expected_version:
                    missing = (
                        f"version {expected_version} is missing (an event was removed)"
                        if version > expected_version
                        else f"version {version} occurs twice"
                    )
                    raise BundleProblem(_fact_where(fact), f"follows version {expected_version - 1}: {missing}")
                if prev != expected_prev:
                    raise BundleProblem(
                        _fact_where(fact),
                        "prev_hash is not the hash of the aggregate's previous event (an event of this "
                        "aggregate was changed, removed or reordered)",
                    )
                heads[ident] = _HEAD.pack(digest, version, type_code)
                # 7. the previous event's place in the inclusion proof: one event behind, so that lines
                # out of order are named as such before the proof is found not to list them
                if held is not None:
                    inclusion.event(*held)
                held = (number, leaf, position, leaf_hash)
                # 8. what the export record commits to
                if aggregate_id != export_id:
                    if agg_type == "Export" and facts.foreign_export is None:
                        facts.foreign_export = number
                    facts.committed.update(_COMMITTED.pack(position, digest))
                    facts.count += 1
                if aggregate_id in manifests:
                    facts.run_events.setdefault(aggregate_id, set()).add((position, version, hash_hex))
                if position == self.audit_position:
                    facts.audit_leaf = leaf
                events += 1
        if held is not None:
            inclusion.event(*held)
        if facts.tainted:
            named = "; ".join(
                f"line {f[0]} (position {f[1]}, {f[4]} {f[3]} version {f[5]}): "
                f"{window_refusal(f[11].decode(), f[1], revoked[f[11]])}"
                for f in facts.tainted
            )
            raise BundleProblem(
                f"{EVENTS}",
                f"{len(facts.tainted)} event(s) signed by a revoked ledger key after its compromise: {named}",
            )
        if b"\n".join(facts.keyring_lines) + b"\n" != self.archive.read(KEYRING_LINES):
            raise BundleProblem(KEYRING_LINES, "differs from the keyring's events in events.jsonl")
        inclusion.finish()
        self.summary.events = events
        self.summary.aggregates = len(heads)
        self.summary.by_type = by_type
        self.summary.tree_size, self.summary.root_hash = inclusion.size, inclusion.root.hex()
        self.summary.proof_nodes = inclusion.nodes
        return facts

    # 5. approval statements ---------------------------------------------------------------
    def _approvals(self, facts: _Facts) -> None:
        registered: dict[tuple[str, str], tuple[int, str]] = {}
        used: set[tuple[str, str]] = set()
        count = 0
        for number, (position, aggregate_id, envelope) in facts.opened.items():
            payload = envelope.get("payload") or {}
            if envelope.get("type") == SIGNING_KEY_REGISTERED:
                registered[(aggregate_id, str(payload.get("key_id")))] = (position, str(payload.get("public_key_pem")))
                continue
            if envelope.get("type") not in (APPROVAL_GRANTED, APPROVAL_REJECTED):
                continue
            where = f"{EVENTS} line {number} (approval of model version {aggregate_id})"
            approver, kid, statement = payload.get("approver"), payload.get("key_id"), payload.get("statement")
            known = registered.get((str(approver), str(kid)))
            if known is None or known[0] >= position:
                raise BundleProblem(
                    where,
                    f"approver {approver} registered no signing key {kid} in this bundle before approving",
                )
            raw = _pem_raw(known[1])
            signature = _b64(payload.get("signature"))
            if not isinstance(statement, dict) or raw is None or signature is None:
                raise BundleProblem(where, "the signed statement, its signature or the approver's key is unreadable")
            decision = "approve" if envelope["type"] == APPROVAL_GRANTED else "reject"
            if (
                statement.get("model_version_id") != aggregate_id
                or statement.get("approver") != approver
                or statement.get("decision") != decision
            ):
                raise BundleProblem(where, "the signed statement names another version, approver or decision")
            try:
                message = canonical_json(statement)
            except ValueError as exc:
                raise BundleProblem(where, f"the statement has no canonical form: {exc}") from None
            if not _verifies(_public_key(raw), signature, message):
                raise BundleProblem(
                    where,
                    f"the approval statement's signature does not verify with approver {approver}'s "
                    f"registered key {kid}",
                )
            used.add((str(approver), str(kid)))
            count += 1
        files = set()
        for name in self.archive.names("keys/approvers/"):
            principal, kid = name.removeprefix("keys/approvers/").removesuffix(".pem").split("/")
            found = registered.get((principal, kid))
            if found is None or self.archive.read(name) != found[1].encode("ascii"):
                raise BundleProblem(name, "is not the public key the approver's signed events register")
            files.add((principal, kid))
        for principal, kid in sorted(used - files):
            raise BundleProblem(f"keys/approvers/{principal}/{kid}.pem", "is missing for a key that signed an approval")
        self.summary.approvals = count

    # 6. checkpoints ----------------------------------------------------------------------
    def _checkpoints(self, index: dict[str, Any], keys: dict[str, bytes]) -> dict[int, bytes]:
        origin = index["origin"]
        hashes = {note_key_hash(origin, raw): raw for raw in keys.values()}
        roots: dict[int, bytes] = {}
        for name in self.archive.names("checkpoints/"):
            try:
                text = self.archive.read(name).decode("utf-8")
                note_origin, size, root, body, signatures = _parse_checkpoint(text)
            except (UnicodeDecodeError, ValueError) as exc:
                raise BundleProblem(name, f"is not a C2SP signed checkpoint: {exc}") from None
            if note_origin != origin:
                raise BundleProblem(name, f"is a checkpoint of log {note_origin!r}, not {origin!r}")
            if name != checkpoint_name(size):
                raise BundleProblem(name, f"holds the checkpoint of tree size {size}")
            ours = [(hashes[kh], sig) for key_name, kh, sig in signatures if key_name == origin and kh in hashes]
            if not ours:
                raise BundleProblem(name, "carries no signature by a ledger key")
            for raw, sig in ours:
                if len(sig) != 64 or not _verifies(_public_key(raw), sig, body.encode("utf-8")):
                    raise BundleProblem(name, f"its signature by ledger key {key_id_of(raw)} does not verify")
            roots[size] = root
            self.notes[size] = (body, signatures)
        if not roots:
            raise BundleProblem("checkpoints/", "holds no signed checkpoint")
        self.summary.checkpoints = sorted(roots)
        self.summary.note_keys = [verifier_key(origin, raw) for raw in keys.values()]
        return roots

    def _witnessed(self) -> None:
        """The latest checkpoint meets the witness policy (yours, else the bundle's); every cosignature verifies."""
        text, source = self.witness_policy, "the policy you gave"
        if text is None and WITNESS_POLICY in self.archive.members:
            text, source = (
                self.archive.read(WITNESS_POLICY).decode("utf-8", "replace"),
                f"the bundle's {WITNESS_POLICY}",
            )
        if text is None:
            self.summary.witnessing = "checkpoints not witnessed (the bundle has no witness policy and you gave none)"
            return
        try:
            policy = parse_witness_policy(text)
        except ValueError as exc:
            raise BundleProblem(WITNESS_POLICY, str(exc)) from None
        latest = max(self.notes)
        for size, (body, signatures) in sorted(self.notes.items()):
            try:
                cosigners = cosigned_by(body, signatures, policy)
            except ValueError as exc:
                raise BundleProblem(checkpoint_name(size), str(exc)) from None
            if size == latest and not policy.met(cosigners):
                raise BundleProblem(
                    checkpoint_name(size),
                    f"lacks the cosignatures {source} requires (quorum {policy.quorum}; cosigned by "
                    f"{', '.join(sorted(cosigners)) or 'no witness'})",
                )
            if size == latest:
                trust = "" if self.witness_policy is not None else " (NOT anchored: pass --witness-policy)"
                self.summary.witnessing = (
                    f"witnessed: the latest checkpoint meets {source} (quorum {policy.quorum}; cosigned by "
                    f"{', '.join(sorted(cosigners)) or 'none needed'}){trust}"
                )

    # 7. inclusion and consistency -------------------------------------------------------------
    def _inclusion(self, roots: dict[int, bytes]) -> InclusionCheck:
        """The inclusion proof against the latest checkpoint, ready to be read in step with the events."""
        size = max(roots)
        self._proof_entries = self._entry_source(size, roots[size])
        return InclusionCheck(self._proof_entries(), size, roots[size])

    def _entry_source(self, size: int, root: bytes) -> Callable[[], Iterator[Entry]]:
        """What reads the proof's entries in leaf order: from proofs/inclusion.jsonl (v2), or from the one JSON
        document of a v1 bundle (read whole, as that format requires)."""
        proof = self.archive.json(INCLUSION)
        if not isinstance(proof, dict) or proof.get("format") not in (INCLUSION_FORMAT, INCLUSION_FORMAT_V1):
            raise BundleProblem(INCLUSION, f"is not a {INCLUSION_FORMAT} proof")
        if proof.get("tree_size") != size or proof.get("root_hash") != root.hex():
            raise BundleProblem(INCLUSION, f"does not prove against the latest checkpoint (tree size {size})")
        if proof["format"] == INCLUSION_FORMAT:
            return lambda: self._entry_lines(size)
        listed, nodes = proof.get("leaves"), proof.get("nodes")
        if not isinstance(listed, list):
            raise BundleProblem(INCLUSION, "has no list of leaves")
        if not isinstance(nodes, list):
            raise BundleProblem(INCLUSION, "has no list of proof nodes")
        entries = [_listed_leaf(entry, at) for at, entry in enumerate(listed)]
        entries += [_proof_node(entry, size) for entry in nodes]
        entries.sort(key=lambda e: (e[0], e[1] < 0))  # a node starting at an event's leaf comes first: refused
        return lambda: iter(entries)

    def audit_path(self, leaf: int) -> tuple[bytes, list[bytes]]:
        """After :meth:`run`: the leaf hash of ``leaf`` and its RFC 9162 audit path, each of its subtree
        hashes folded from the (verified) events and proof nodes in one more pass over both."""
        size = self.summary.tree_size
        ranges = inclusion_ranges(leaf, size)
        folds = [MerkleFold(lo) for lo, _ in ranges]
        order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
        starts = [ranges[i][0] for i in order]

        def events() -> Iterator[Entry]:
            for line in self.archive.lines(EVENTS):
                m = _LINE.match(line)
                if m is not None:
                    at = int(m.group(2))
                    yield at, 0, at, leaf_hash(bytes.fromhex(m.group(7).decode()))

        nodes = (entry for entry in self._proof_entries() if entry[1] >= 0)
        value = b""
        for first, level, index, digest in heapq.merge(events(), nodes):
            if level == 0 and index == leaf:
                value = digest
                continue
            folds[order[bisect.bisect_right(starts, first) - 1]].push(level, index, digest)
        return value, [fold.root(hi) for fold, (_, hi) in zip(folds, ranges, strict=True)]

    def _entry_lines(self, size: int) -> Iterator[Entry]:
        leaf_entry, node_entry = _LEAF_ENTRY.fullmatch, _NODE_ENTRY.fullmatch
        for number, line in enumerate(self.archive.lines(INCLUSION_LINES), start=1):
            # The two forms the exporter writes are matched directly; anything else is parsed as JSON.
            if m := leaf_entry(line):
                yield int(m.group(1)), -1, int(m.group(2)), b""
                continue
            if m := node_entry(line):
                level, index = int(m.group(1)), int(m.group(2))
                if level < 64 and (index + 1) << level <= size:
                    yield index << level, level, index, binascii.unhexlify(m.group(3))
                    continue
            try:
                entry = json.loads(line)
            except ValueError:
                raise BundleProblem(INCLUSION_LINES, f"line {number} is not a proof entry") from None
            if isinstance(entry, list) and len(entry) == 3:
                yield _proof_node(entry, size)
            else:
                yield _listed_leaf(entry, number - 1)

    def _consistency(self, roots: dict[int, bytes]) -> None:
        data = self.archive.json(CONSISTENCY)
        latest = max(roots)
        if not isinstance(data, dict) or data.get("format") != CONSISTENCY_FORMAT or data.get("to_size") != latest:
            raise BundleProblem(CONSISTENCY, f"is not a set of {CONSISTENCY_FORMAT} proofs to tree size {latest}")
        proofs: dict[int, list[bytes]] = {}
        for entry in data.get("proofs") or []:
            try:
                proofs[int(entry["from_size"])] = [bytes.fromhex(h) for h in entry["proof"]]
            except (TypeError, ValueError, KeyError):
                raise BundleProblem(CONSISTENCY, f"proof {str(entry)[:80]} is malformed") from None
        for size in sorted(roots):
            if size == latest:
                continue
            proof = proofs.get(size)
            if proof is None:
                raise BundleProblem(CONSISTENCY, f"has no proof from the checkpoint of size {size} to {latest}")
            if not verify_consistency(size, latest, roots[size], roots[latest], proof):
                raise BundleProblem(
                    CONSISTENCY,
                    f"the proof from tree size {size} to {latest} does not verify: the checkpoints "
                    "do not describe one append-only log",
                )
        self.summary.consistency_proofs = len(roots) - 1

    # 8. the export record and the files it names ------------------------------------------------
    def _export_record(self, index: dict[str, Any], facts: _Facts, keys: dict[str, bytes]) -> None:
        records = [(n, e) for n, (_, _, e) in facts.opened.items() if e.get("type") == EXPORT_CREATED]
        if len(records) != 1:
            raise BundleProblem(EVENTS, f"holds {len(records)} export records; a bundle has exactly one")
        line, record = records[0]
        export_id, payload = record["aggregate_id"], record["payload"]
        where = f"the signed export record ({EVENTS} line {line})"
        if index["export_id"] != export_id or index["model"] != payload.get("model_name"):
            raise BundleProblem(INDEX, f"names another export or model than {where}")
        committed = payload.get("events") or {}
        if facts.foreign_export is not None:
            raise BundleProblem(f"{EVENTS} line {facts.foreign_export}", "an event of another export")
        hasher, count = facts.committed, facts.count
        if count != committed.get("count"):
            raise BundleProblem(
                EVENTS,
                f"holds {count} events besides the export record, but {where} commits to "
                f"{committed.get('count')}: events were removed or added",
            )
        if "sha256:" + hasher.hexdigest() != committed.get("digest"):
            raise BundleProblem(EVENTS, f"the events differ from the ones {where} commits to")
        files = payload.get("files") or {}
        attachments = self._attachments(facts)
        checked = 0
        for name in sorted(
            set(self.archive.names("manifests/"))
            | set(self.archive.names("reports/"))
            | ({README, VERIFIER} & set(self.archive.members))
        ):
            if name not in files:
                raise BundleProblem(name, f"is not named by {where}")
        for name, digest in sorted(files.items()):
            data = self.archive.read(name)
            actual = "sha256:" + hashlib.sha256(data).hexdigest()
            if actual != digest:
                raise BundleProblem(name, f"has digest {actual}, but {where} names {digest}: the file was replaced")
            if name.startswith("reports/attachments/"):
                report_id = name.split("/")[2]
                if name not in {
                    attachment_name(report_id, n, d) for n, d in attachments.get(report_id, set()) if d == actual
                }:
                    raise BundleProblem(name, "is not an attachment a Report.Published event of this bundle records")
            elif name.startswith("manifests/") and not name.endswith(".provenance.json"):
                self._manifest(name, data, facts)
            elif name.endswith(".provenance.json"):
                self._provenance(name, data, keys, files)
            checked += 1
        self.summary.files = checked
        self.summary.export_id, self.summary.model = export_id, str(payload.get("model_name"))
        self.summary.created_at, self.summary.created_by = str(record["recorded_at"]), str(record["actor"])

    @staticmethod
    def _attachments(facts: _Facts) -> dict[str, set[tuple[str, str]]]:
        found: dict[str, set[tuple[str, str]]] = {}
        for _, _, envelope in facts.opened.values():
            if envelope.get("type") == REPORT_PUBLISHED:
                for name, digest in (envelope["payload"].get("attachments") or {}).items():
                    found.setdefault(envelope["aggregate_id"], set()).add((str(name), str(digest)))
        return found

    def _manifest(self, name: str, data: bytes, facts: _Facts) -> None:
        run_id = name.removeprefix("manifests/").removesuffix(".json")
        try:
            document = json.loads(data)
            listed = [(int(e["notification_id"]), int(e["version"]), str(e["hash"])) for e in document["events"]]
        except (ValueError, KeyError, TypeError):
            raise BundleProblem(name, "is not a run manifest") from None
        if document.get("run_id") != run_id:
            raise BundleProblem(name, f"is the manifest of run {document.get('run_id')}")
        ours = facts.run_events.get(run_id, set())
        for entry in listed:
            if entry not in ours:
                raise BundleProblem(
                    name,
                    f"lists run event {entry[0]} (version {entry[1]}) that events.jsonl does not hold with that hash",
                )

    def _provenance(self, name: str, data: bytes, keys: dict[str, bytes], files: dict[str, str]) -> None:
        try:
            envelope = json.loads(data)
            body = _b64(envelope["payload"])
            signatures = list(envelope["signatures"])
        except (ValueError, KeyError, TypeError):
            raise BundleProblem(name, "is not a DSSE envelope") from None
        if envelope.get("payloadType") != DSSE_PAYLOAD_TYPE or body is None:
            raise BundleProblem(name, f"is not a DSSE envelope of {DSSE_PAYLOAD_TYPE}")
        message = _pae(DSSE_PAYLOAD_TYPE, body)
        signed = any(
            isinstance(s, dict)
            and s.get("keyid") in keys
            and (sig := _b64(s.get("sig"))) is not None
            and _verifies(_public_key(keys[s["keyid"]]), sig, message)
            for s in signatures
        )
        if not signed:
            raise BundleProblem(name, "no signature of the DSSE envelope verifies with a ledger key")
        manifest = name.replace(".provenance.json", ".json")
        try:
            statement = json.loads(body)
            byproducts = statement["predicate"]["runDetails"]["byproducts"]
            digest = next(b["digest"]["sha256"] for b in byproducts if b.get("name") == "manifest")
        except (ValueError, KeyError, TypeError, StopIteration):
            raise BundleProblem(name, "the signed statement names no manifest") from None
        if files.get(manifest) != f"sha256:{digest}":
            raise BundleProblem(manifest, f"is not the manifest the signed provenance {name} names")


# -- entry points -------------------------------------------------------------------------------


def verify_bundle(
    path: str | os.PathLike[str],
    *,
    anchors: Sequence[bytes] = (),
    workers: int | None = None,
    limits: Limits | None = None,
    crypto_only: bool = False,
    witness_policy: str | None = None,
) -> Summary:
    """Verify a bundle; return its summary or raise :class:`BundleProblem` naming the first problem.

    ``anchors`` are raw Ed25519 public keys of the ledger obtained out of band;
    one of them must be in the bundle's key chain. With ``crypto_only`` every
    signature is checked with ``cryptography`` even when PyNaCl is installed.
    """
    archive = Archive(Path(path), limits or Limits())
    try:
        return Verification(
            archive, anchors, workers or os.cpu_count() or 1, fast=not crypto_only, witness_policy=witness_policy
        ).run()
    finally:
        archive.close()


def audit_path(path: str | os.PathLike[str], position: int, *, workers: int | None = None) -> dict[str, Any]:
    """Verify the bundle, then give the standard RFC 9162 inclusion proof of the event at ``position``."""
    archive = Archive(Path(path), Limits())
    try:
        verification = Verification(archive, (), workers or os.cpu_count() or 1, audit_position=position)
        summary = verification.run()
        leaf = verification.audit_leaf
        if leaf is None:
            raise BundleProblem(EVENTS, f"holds no event at position {position}")
        leaf_value, proof = verification.audit_path(leaf)
        root = bytes.fromhex(summary.root_hash)
        return {
            "position": position,
            "leaf_index": leaf,
            "tree_size": summary.tree_size,
            "leaf_hash": leaf_value.hex(),
            "root_hash": summary.root_hash,
            "audit_path": [h.hex() for h in proof],
            "verified": verify_inclusion(leaf_value, leaf, summary.tree_size, proof, root),
            "checkpoint": checkpoint_name(summary.tree_size),
        }
    finally:
        archive.close()


def extract(path: str | os.PathLike[str], target: str | os.PathLike[str]) -> int:
    """Write a (verified) bundle's members under ``target``; never outside it, never over a file."""
    root = Path(target).resolve()
    archive = Archive(Path(path), Limits())
    try:
        written = 0
        for name in sorted(archive.members):
            destination = (root / name).resolve()
            if root not in destination.parents:
                raise BundleProblem(name, "would be written outside the target directory")
            destination.parent.mkdir(parents=True, exist_ok=True)
            with open(destination, "xb") as handle:
                handle.write(archive.read(name))
            written += 1
        return written
    finally:
        archive.close()


def _anchor(path: str) -> bytes:
    try:
        raw = _pem_raw(Path(path).read_bytes())
    except OSError as exc:
        raise BundleProblem(path, f"cannot be read: {exc.strerror or exc}") from None
    if raw is None:
        raise BundleProblem(path, "is not an Ed25519 public key in PEM")
    return raw


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: verify, print the summary or the first problem; 0 when verified, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="verify_bundle.py", description="Verify an ML Ledger export bundle offline.")
    parser.add_argument("bundle", help="the bundle (.zip)")
    parser.add_argument(
        "--public-key",
        action="append",
        default=[],
        metavar="PEM",
        help="a ledger public key you trust (PEM file); repeatable",
    )
    parser.add_argument(
        "--witness-policy",
        metavar="FILE",
        help="the C2SP tlog-policy you trust: the latest checkpoint must carry its quorum's cosignatures",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes checking signatures (default: every core)")
    parser.add_argument(
        "--max-bytes", type=int, default=Limits.max_bundle_bytes, help="refuse a bundle larger than this many bytes"
    )
    parser.add_argument("--extract", metavar="DIR", help="after verifying, write the files under DIR")
    parser.add_argument(
        "--audit-path",
        type=int,
        metavar="POSITION",
        help="print the RFC 9162 inclusion proof of the event at this ledger position",
    )
    parser.add_argument(
        "--crypto-only", action="store_true", help="check every signature with cryptography even if PyNaCl is installed"
    )
    args = parser.parse_args(argv)
    try:
        anchors = [_anchor(p) for p in args.public_key]
        if args.audit_path is not None:
            print(json.dumps(audit_path(args.bundle, args.audit_path, workers=args.workers), indent=2))
            return 0
        summary = verify_bundle(
            args.bundle,
            anchors=anchors,
            workers=args.workers,
            limits=Limits(max_bundle_bytes=args.max_bytes),
            crypto_only=args.crypto_only,
            witness_policy=Path(args.witness_policy).read_text() if args.witness_policy else None,
        )
        for line in summary.lines():
            print(line)
        if args.extract:
            print(f"extracted {extract(args.bundle, args.extract)} files under {args.extract}")
    except BundleProblem as problem:
        print(f"FAILED: {problem}")
        return 1
    except Exception as exc:  # fail closed, in one line, on anything unforeseen in a hostile file
        print(f"FAILED: {Path(args.bundle).name}: cannot be verified: {type(exc).__name__}: {exc}".splitlines()[0])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
