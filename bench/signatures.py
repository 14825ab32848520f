"""Benchmark: Ed25519 signatures per second with the ledger key in SoftHSM2 versus the key file.

The file key signs in this process (libsodium, ``Signer.sign``); the token key
signs inside SoftHSM2 through PKCS#11 (``C_Sign`` with ``CKM_EDDSA``,
``TokenKey.sign``), its private half never in this process. Each is measured
signing 32-byte event hashes:

* one thread, one signature after another;
* ``sign_all``, what the event store does with a batch (the file key spreads
  it over every core; the token key's calls are serialized);
* end to end: batched appends through ``Ledger.save`` (batches of 500) with
  each key, on PostgreSQL (``--database-url``) or ``--sqlite``; ``--appends 0``
  skips this.

Without ``--key-uri`` the token is made for the run: a SoftHSM2 token in a
temporary directory (``SOFTHSM2_CONF``), an Ed25519 key generated in it by
``pkcs11-tool`` (Debian: ``apt-get install softhsm2 opensc``). Run from the
repository root::

    .venv/bin/python bench/signatures.py
    .venv/bin/python bench/signatures.py --signatures 20000 --appends 0
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from append import (  # type: ignore[import-not-found]
    DEFAULT_DATABASE_URL,
    describe_database,
    fresh_settings,
    install_sigterm_handler,
    load_average,
    machine_line,
    opened,
    say,
)

from domain.integrity.keys import Signer, SigningKey, verify_signature
from service.ops.workload import append_events
from service.settings import Settings
from service.store.event_store import sign_all

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN, PIN = "mlledger-bench", "bench-pin"


def make_token(root: Path) -> str:
    """A fresh SoftHSM2 token under ``root`` holding one Ed25519 key; its URI (with the PIN)."""
    for tool in ("softhsm2-util", "pkcs11-tool"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: apt-get install softhsm2 opensc (or make softhsm as root)")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # before the module is loaded in this process
    run = {"check": True, "capture_output": True, "timeout": 60}
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--pin", PIN, "--so-pin", "so-" + PIN], **run
    )
    subprocess.run(
        [
            *("pkcs11-tool", "--module", MODULE, "--token-label", TOKEN, "--login", "--pin", PIN, "--keypairgen"),
            *("--key-type", "EC:edwards25519", "--label", "ledger", "--id", "01"),
        ],
        **run,
    )
    return f"pkcs11:token={TOKEN};object=ledger?pin-value={PIN}"


def rate(func: Callable[[list[bytes]], object], digests: list[bytes], rounds: int = 3) -> float:
    """Signatures per second of ``func`` over ``digests``, best of ``rounds``."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        func(digests)
        best = min(best, time.perf_counter() - started)
    return len(digests) / best


def cpu_per_signature(key: SigningKey, digests: list[bytes], rounds: int = 3) -> float:
    """CPU microseconds this process spends per signature on one thread, best of ``rounds``.

    SoftHSM2 is a library in this process, so its work counts here too; CPU time
    is steadier than wall time on a machine shared with other work.
    """
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for digest in digests:
            key.sign(digest)
        best = min(best, time.process_time() - started)
    return best / len(digests) * 1e6


def appends_per_second(settings: Settings, count: int) -> float:
    """Events per second appended in batches of 500 with ``settings``' key, after a warm-up."""
    with opened(settings) as services:
        append_events(services.ledger, 2_000, batch=500)
        started = time.perf_counter()
        written = append_events(services.ledger, count, batch=500)
        return written / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--signatures", type=int, default=10_000, help="hashes signed per measurement")
    parser.add_argument("--appends", type=int, default=20_000, help="events appended end to end per key (0: skip)")
    parser.add_argument("--key-uri", help="an existing token key (RFC 7512 URI with its PIN) instead of a new token")
    parser.add_argument("--module", default=MODULE, help=f"PKCS#11 module (default {MODULE})")
    parser.add_argument("--database-url", default=os.environ.get("MLLEDGER_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--sqlite", action="store_true", help="end to end on a temporary SQLite ledger")
    args = parser.parse_args(argv)
    install_sigterm_handler()

    root = Path(tempfile.mkdtemp(prefix="mlledger-softhsm-"))
    try:
        uri = args.key_uri or make_token(root)
        from service.common.pkcs11 import open_token_key

        token_key = open_token_key(uri, args.module)
        file_key = Signer.generate()
        digests = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(args.signatures)]
        keys: list[tuple[str, SigningKey]] = [("key file (libsodium, in process)", file_key)]
        keys.append(("token key (C_Sign CKM_EDDSA in SoftHSM2)", token_key))
        rows = []
        for label, key in keys:
            assert verify_signature(key.public_key, key.sign(digests[0]), digests[0])
            say(f"signing {len(digests):,} hashes with the {label} ...")
            one = rate(lambda ds, key=key: [key.sign(d) for d in ds], digests)  # type: ignore[misc]
            batch = rate(lambda ds, key=key: sign_all(key, ds), digests)  # type: ignore[misc]
            rows.append((label, one, batch, cpu_per_signature(key, digests)))
        database = ""
        appended: list[float] = []
        if args.appends:
            for label, key_uri in (("key file", ""), ("SoftHSM2 token", uri)):
                with fresh_settings(args.database_url, args.sqlite) as base:
                    settings = Settings(
                        data_dir=base.data_dir,
                        database_url=base.database_url,
                        database_schema=base.database_schema,
                        key_uri=key_uri,  # type: ignore[arg-type]
                        pkcs11_module=args.module,
                    )
                    database = database or describe_database(settings)
                    say(f"appending {args.appends:,} events in batches of 500 with the {label} ...")
                    appended.append(appends_per_second(settings, args.appends))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print()
    print("ML Ledger signatures: the ledger key in SoftHSM2 versus the key file (32-byte event hashes)")
    header = f"{'key':<56} | {'1 thread /s':>11} | {'sign_all /s':>11} | {'CPU µs/signature':>16}"
    print(header)
    print("-" * len(header))
    for label, one, batch, cpu in rows:
        print(f"{label:<56} | {one:>11,.0f} | {batch:>11,.0f} | {cpu:>16.1f}")
    print(
        f"file key / token key, one thread: {rows[0][1] / rows[1][1]:.1f}x; sign_all: {rows[0][2] / rows[1][2]:.1f}x; "
        f"CPU per signature: {rows[1][3] / rows[0][3]:.1f}x; load average now {load_average()}"
    )
    if appended:
        print(
            f"end to end, batched appends (500 per transaction): key file {appended[0]:,.0f} events/s, "
            f"SoftHSM2 token {appended[1]:,.0f} events/s"
        )
    print(machine_line(database or "none (signing only)"))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
