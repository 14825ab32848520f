"""Concurrent writers and a writer killed mid-flight leave a valid ledger."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import sqlalchemy as sa
from support.ledger import REPO, settings_env

from domain.errors import VersionConflict
from domain.integrity.keys import Signer, public_key_pem
from domain.principal import Principal, possession_message
from projections import transparency_log as tlog
from service.bootstrap import Services, open_services
from service.ops.projector import publish_checkpoint_if_due
from service.ops.verify import verify_ledger
from service.settings import Settings

THREADS = 8


def _verify(services: Services) -> None:
    services.runner.catch_up()
    publish_checkpoint_if_due(services, force=True)
    report = verify_ledger(services.settings, [], workers=2)
    assert report.ok, [f.describe() for f in report.findings]


def _register_own_key(principal: Principal) -> None:
    """The principal registers a fresh key of its own (two events: the proof, the key)."""
    signer = Signer.generate()
    proof = signer.sign(possession_message(str(principal.id), signer.key_id))
    principal.register_signing_key(public_key_pem(signer.public_key), proof, actor=str(principal.id))


def test_stale_writers_one_wins_the_rest_get_a_conflict(services: Services) -> None:
    principal_id = services.ledger.register_principal("shared", "service", [], actor="admin").id
    loaded = [services.ledger.get(principal_id, Principal) for _ in range(THREADS)]
    barrier = threading.Barrier(THREADS)
    outcomes: list[str] = []

    def write(principal: Principal) -> None:
        _register_own_key(principal)
        barrier.wait()
        try:
            services.ledger.save(principal)
            outcomes.append("stored")
        except VersionConflict as exc:
            assert "another writer" in exc.detail
            outcomes.append("conflict")

    threads = [threading.Thread(target=write, args=(p,)) for p in loaded]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["conflict"] * (THREADS - 1) + ["stored"]
    assert services.ledger.get(principal_id, Principal).version == 3  # possession proven, key registered
    _verify(services)


def test_writers_retrying_from_stale_versions_keep_the_chain_valid(services: Services) -> None:
    principal_id = services.ledger.register_principal("busy", "service", [], actor="admin").id
    stored = 0
    conflicts = 0
    lock = threading.Lock()

    def write() -> None:
        nonlocal stored, conflicts
        for _ in range(5):
            while True:
                principal = services.ledger.get(principal_id, Principal)
                _register_own_key(principal)
                try:
                    services.ledger.save(principal)
                except VersionConflict:
                    with lock:
                        conflicts += 1
                    continue
                with lock:
                    stored += 1
                break

    threads = [threading.Thread(target=write) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    principal = services.ledger.get(principal_id, Principal)
    assert stored == THREADS * 5
    assert principal.version == 1 + 2 * stored  # each key: possession proven, then registered
    assert len(principal.signing_keys) == stored
    _verify(services)


WRITER = """
import sys
from service.bootstrap import open_services
from service.ops.projector import ProjectorThread
from service.settings import Settings
from service.ops.workload import append_events

services = open_services(Settings())
ProjectorThread(services).start()
print("ready", flush=True)
while True:
    append_events(services.ledger, 50, batch=10)
"""


def _count(settings: Settings, services: Services) -> int:
    from service.store.persistence import events_table

    with services.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {events_table(services.engine)}")).scalar() or 0)


def test_writer_killed_with_sigkill_leaves_a_verifiable_ledger(services: Services) -> None:
    settings = services.settings
    env = settings_env(settings)
    env["MLLEDGER_PROJECTION_BATCH_SIZE"] = "37"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 60
        while _count(settings, services) < 1_500 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    # A COMMIT the writer sent just before it died still completes in its database session: count once
    # the ledger has stopped growing.
    written, settled = -1, _count(settings, services)
    while written != settled:
        written = settled
        time.sleep(0.5)
        settled = _count(settings, services)
    assert written >= 1_500

    reopened = open_services(settings)
    try:
        _verify(reopened)
        with reopened.engine.connect() as conn:
            leaves = conn.execute(sa.select(sa.func.count()).select_from(tlog.tlog_leaves)).scalar()
            distinct = conn.execute(sa.select(sa.func.count(sa.distinct(tlog.tlog_leaves.c.notification_id)))).scalar()
        assert leaves == written == distinct
    finally:
        reopened.close()
