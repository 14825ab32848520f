"""The core of the ledger application: wiring, loading, saving and the ledger's own keys.

Routers and the CLI call these methods; the aggregates enforce the rules; the
event store seals, chains and records. Every write returns the ledger position
(the notification id of its last event) so clients can read their own writes.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, MutableOrImmutableAggregate
from eventsourcing.persistence import IntegrityError, Recording

from domain.errors import LedgerError, LedgerKeyRetired, NotFound, VersionConflict
from domain.integrity.keys import SigningKey, public_key_pem
from domain.integrity.ledger_key import KEYRING_ID, LedgerKeyring
from domain.integrity.verification import follow_key_chain
from service.settings import Settings
from service.store import keystore
from service.store.event_store import LedgerEventStore, SealingMapper
from service.store.persistence import eventsourcing_env

if TYPE_CHECKING:
    from service.application.group_commit import GroupCommitter

SYSTEM_ACTOR = "system:ledger"
AGGREGATE_CACHE = {"AGGREGATE_CACHE_MAXSIZE": "10000"}
CONFLICT_ATTEMPTS = 8
log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


_STRIPES = [threading.RLock() for _ in range(256)]


def stripe_of(record: str) -> threading.RLock:
    """The lock :func:`retried_on_conflict` commands on ``record`` take turns on in this process."""
    return _STRIPES[zlib.crc32(record.encode()) % len(_STRIPES)]


def retried_on_conflict(command: Callable[P, R]) -> Callable[P, R]:
    """Run ``command`` again, on fresh state, when another writer changed its aggregate first.

    Only for commands whose meaning does not depend on the state the caller saw:
    logging parameters, metrics, artifacts and tags, ending a run, filing under an
    experiment. A tracking server takes those in the order they arrive, and MLflow
    clients send them from several threads at once (autologging does). Each attempt
    loads the aggregates anew and the aggregate checks its rules again, so a retry is
    the command arriving just after the other writer's. A decision taken on a version
    the caller looked at (an approval, a deployment) must not be retried this way.

    Within one process such commands on one record (the first argument: a run,
    experiment or model) take turns, so they do not race each other at all; writers in
    other processes are met by retrying after a growing, jittered pause.
    """

    first = list(inspect.signature(command).parameters)[1]  # after self: the run, experiment or model

    @functools.wraps(command)
    def retried(*args: P.args, **kwargs: P.kwargs) -> R:
        record = str(args[1] if len(args) > 1 else kwargs.get(first))
        with stripe_of(record):
            for attempt in range(1, CONFLICT_ATTEMPTS):
                try:
                    return command(*args, **kwargs)
                except VersionConflict:
                    time.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))
            return command(*args, **kwargs)

    return retried


class KeyNotInKeyring(LedgerError):
    """The configured ledger key is not the keyring's current key."""

    title = "Ledger key not in keyring"


@dataclass(frozen=True)
class Written:
    """What a command recorded: the aggregate id and the ledger position."""

    id: str
    position: int


class LedgerCore(Application[uuid.UUID]):
    """Event-sourced application whose every event is sealed and signed."""

    name = "mlledger"

    def __init__(self, settings: Settings, signer: SigningKey, env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self._signer = signer
        self._keyring_version = 0
        """The keyring version at which ``_signer`` was last seen to be the current key (0: not yet)."""
        self._committer: GroupCommitter | None = None
        super().__init__(env={**AGGREGATE_CACHE, **eventsourcing_env(settings), **(env or {})})
        assert isinstance(self.mapper, SealingMapper)
        self.mapper.refresh_keys = self._trusted_keys

    def _trusted_keys(self) -> dict[str, bytes]:
        """The ledger keys, followed from the keyring's own signed events."""
        events = [
            (0, str(e.originator_id), e.originator_version, e.topic, bytes(e.state))
            for e in self.recorder.select_events(KEYRING_ID)
        ]
        keys, problem = follow_key_chain(events)
        if problem is not None:
            log.error("ledger keyring does not verify: %s", problem.describe())
        return keys

    # -- wiring -------------------------------------------------------------
    def construct_mapper(self) -> SealingMapper:
        return SealingMapper(lambda: self._signer, self.settings.max_payload_bytes)

    def construct_event_store(self) -> LedgerEventStore:
        assert isinstance(self.mapper, SealingMapper)
        store = LedgerEventStore(mapper=self.mapper, recorder=self.recorder)
        store.keyring_version = lambda: self._keyring_version
        store.on_keyring_moved = self._check_signer_current
        return store

    @property
    def signer(self) -> SigningKey:
        """The key that seals new events."""
        return self._signer

    def share_commits(self, committer: GroupCommitter | None, only: GroupCommitter | None = None) -> None:
        """Record every later :meth:`save` through ``committer`` (None: each save in its own transaction).

        With ``only``, the committer is replaced only while it is ``only`` (a
        committer that stops detaches itself, never another one).
        """
        if only is None or self._committer is only:
            self._committer = committer

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[uuid.UUID]]:
        """Record the pending events of aggregates, and bare new events, in one transaction.

        With a group committer shared (the API process), concurrent saves share
        transactions and signatures, each still all or nothing
        (:mod:`service.application.group_commit`); otherwise, and on the
        committer's own thread, the save is its own transaction.
        """
        committer = self._committer
        if committer is None or kwargs or committer.on_writer_thread():
            return self.save_now(*objs, **kwargs)
        items = [obj for obj in objs if obj is not None]
        if not any(obj.pending_events if isinstance(obj, Aggregate) else True for obj in items):
            return self.save_now(*items)
        return committer.save(items)

    def save_now(self, *objs: Any, **kwargs: Any) -> list[Recording[uuid.UUID]]:
        """Record the pending events of aggregates, and bare new events, in one transaction of their own.

        A lost race becomes :class:`VersionConflict`. This is the library's
        ``save`` without what the ledger does not use (snapshots, followers'
        notification hooks) and with a plain class test per object, which
        matters when serving saves thousands of predictions at once.
        """
        aggregates: list[Aggregate] = []
        events: list[Any] = []
        for obj in objs:
            if isinstance(obj, Aggregate):
                aggregates.append(obj)
                events.extend(obj.collect_events())
            elif obj is not None:
                events.append(obj)
        try:
            recordings = self.events.put(events, **kwargs)
        except IntegrityError as exc:
            raise VersionConflict(f"another writer got there first: {exc}") from None
        cache = self.repository.cache
        if cache is not None:
            # Keep the cache current, so the next command does not re-read (and re-verify) what was just written.
            for aggregate in aggregates:
                cache.put(aggregate.id, aggregate)
        return recordings

    def _written(self, aggregate: MutableOrImmutableAggregate[uuid.UUID]) -> Written:
        recordings = self.save(aggregate)
        return Written(id=str(aggregate.id), position=recordings[-1].notification.id)

    def _written_all(self, main: Any, *others: Any) -> Written:
        """Save several aggregates in one transaction; report the first one's id."""
        recordings = self.save(main, *others)
        return Written(id=str(main.id), position=recordings[-1].notification.id)

    def _series(self, kind: type[Any], name: str, actor: str, **create: Any) -> Any:
        """The named series aggregate, created on first use."""
        oid = kind.create_id(name=name)
        try:
            return self.repository.get(oid)
        except AggregateNotFoundError:
            return kind(name=name, actor=actor, **create)

    def get(self, aggregate_id: uuid.UUID | str, kind: type[Any]) -> Any:
        """Load an aggregate of the given class, or raise :class:`NotFound`."""
        try:
            oid = aggregate_id if isinstance(aggregate_id, uuid.UUID) else uuid.UUID(aggregate_id)
            aggregate: Any = self.repository.get(oid)
        except (ValueError, AggregateNotFoundError):
            raise NotFound(f"no {kind.__name__} with id {aggregate_id}") from None
        if not isinstance(aggregate, kind):
            raise NotFound(f"no {kind.__name__} with id {aggregate_id}")
        return aggregate

    def read(self, aggregate_id: uuid.UUID | str, kind: type[Any]) -> Any:
        """:meth:`get` for reading only: the aggregate this process keeps, brought up to date, not a copy
        of it (a command's copy protects the kept one from a change that is then refused). Change nothing
        in it."""
        try:
            oid = aggregate_id if isinstance(aggregate_id, uuid.UUID) else uuid.UUID(aggregate_id)
            aggregate: Any = self.repository.get(oid, deepcopy_from_cache=False)
        except (ValueError, AggregateNotFoundError):
            raise NotFound(f"no {kind.__name__} with id {aggregate_id}") from None
        if not isinstance(aggregate, kind):
            raise NotFound(f"no {kind.__name__} with id {aggregate_id}")
        return aggregate

    def has_newer(self, known: Mapping[uuid.UUID, int]) -> bool:
        """Whether any aggregate in ``known`` has an event after the version given for it.

        One query on PostgreSQL, one indexed look-up per aggregate otherwise;
        what a process remembers of aggregates is checked with it.
        """
        has_newer = getattr(self.recorder, "has_newer", None)
        if has_newer is not None:
            return bool(has_newer(known))
        return any(self.recorder.select_events(oid, gt=version, limit=1) for oid, version in known.items())

    def newer(self, known: Mapping[uuid.UUID, int]) -> set[uuid.UUID]:
        """Which aggregates in ``known`` have an event after the version given for each.

        One query on PostgreSQL, one indexed look-up per aggregate otherwise.
        """
        newer = getattr(self.recorder, "newer", None)
        if newer is not None:
            return set(newer(known))
        return {oid for oid, version in known.items() if self.recorder.select_events(oid, gt=version, limit=1)}

    def position(self) -> int:
        """The notification id of the newest event (0 for an empty ledger)."""
        return self.recorder.max_notification_id() or 0

    # -- the ledger's own keys ----------------------------------------------
    def keyring(self) -> LedgerKeyring | None:
        """The keyring, or None before the first start."""
        try:
            keyring: Any = self.repository.get(KEYRING_ID)
        except AggregateNotFoundError:
            return None
        assert isinstance(keyring, LedgerKeyring)
        return keyring

    def ensure_keyring(self) -> LedgerKeyring:
        """Record the genesis key on first start; refuse a key the keyring does not know."""
        keyring = self.keyring()
        if keyring is None:
            keyring = LedgerKeyring(
                key_id=self._signer.key_id,
                public_key_pem=public_key_pem(self._signer.public_key),
                actor=SYSTEM_ACTOR,
            )
            try:
                self.save(keyring)
            except VersionConflict:
                keyring = self.keyring()  # another process established it first
                assert keyring is not None
        if keyring.current_key_id != self._signer.key_id:
            raise KeyNotInKeyring(
                f"the configured ledger key {self._signer.key_id} is not the current key "
                f"of this ledger ({keyring.current_key_id}); configure the current key "
                f"({self._signer.source} holds the old one)"
            )
        self._keyring_version = keyring.version
        return keyring

    def _check_signer_current(self) -> None:
        """Catch up with the keyring after an insert found it changed: sign only with its current key.

        Another process may have rotated the key since this one last looked; each
        insert checks the keyring's version under the write lock
        (:mod:`service.store.keyring_guard`). Then this process takes the new key
        from the key file, the pending rotation's file or a token key a rotation
        named (:func:`service.store.keystore.find_key`) or, when it has none that
        is current, refuses to write with :class:`LedgerKeyRetired`.
        """
        rows = self.recorder.select_events(KEYRING_ID, gt=self._keyring_version)
        if not rows:
            return  # nothing new (or the genesis key is being established)
        current, version = self._signer.key_id, self._keyring_version
        for row in rows:
            if row.topic in (LedgerKeyring.Established.TOPIC, LedgerKeyring.Rotated.TOPIC):
                introduced = self.mapper.to_domain_event(row)  # checked: hash and signature
                assert isinstance(introduced, LedgerKeyring.Established | LedgerKeyring.Rotated)
                current = introduced.key_id
            version = row.originator_version
        if current == self._signer.key_id:
            self._keyring_version = version
            return
        found = keystore.find_key(self.settings, current)
        if found is not None:
            log.warning("the ledger key was rotated by another process: now signing with %s", current)
            self._signer, self._keyring_version = found[1], version
            return
        raise LedgerKeyRetired(
            f"this process holds ledger key {self._signer.key_id}, which a rotation retired "
            f"(the current key is {current}, and neither a key file nor a token key here is it): "
            "restart with the current key"
        )

    def rotate_key(self, new_signer: SigningKey, reason: str, actor: str) -> Written:
        """Record a rotation signed by the current key, then sign with the new one."""
        self._check_signer_current()  # another process may have rotated since this one last wrote
        keyring = self.ensure_keyring()
        keyring.rotate(
            key_id=new_signer.key_id,
            public_key_pem=public_key_pem(new_signer.public_key),
            reason=reason,
            actor=actor,
        )
        written = self._written(keyring)
        self._signer = new_signer
        self._keyring_version = keyring.version
        return written

    def revoke_key(self, key_id: str, compromised_since: int, reason: str, actor: str) -> Written:
        """Record that retired ledger key ``key_id`` was compromised from ``compromised_since`` on."""
        self._check_signer_current()
        keyring = self.ensure_keyring()
        keyring.revoke(key_id=key_id, compromised_since=compromised_since, reason=reason, actor=actor)
        written = self._written(keyring)
        self._keyring_version = keyring.version
        return written
