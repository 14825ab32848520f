"""Child process of the console's "verify ledger" action.

Reads the service's settings (JSON) on stdin, verifies the whole ledger with
the keys in the keys directory as trust anchors (as ``mlledger verify`` does by
default) and prints one JSON line: the report's counts and findings.

    python -m service.console.verify_process [WORKERS] < settings.json
"""

from __future__ import annotations

import json
import sys

from domain.integrity.keys import load_public_key_pem, raw_public_key
from service.ops.verify import verify_ledger
from service.settings import Settings


def local_anchors(settings: Settings) -> list[bytes]:
    """The ledger public keys kept in the keys directory."""
    public_dir = settings.keys_dir / "public"
    if not public_dir.is_dir():
        return []
    return [raw_public_key(load_public_key_pem(p.read_bytes())) for p in sorted(public_dir.glob("*.pem"))]


def main(argv: list[str]) -> int:
    """Verify and print the report as one JSON line."""
    settings = Settings.model_validate_json(sys.stdin.read())
    workers = int(argv[0]) if argv else None
    report = verify_ledger(settings, local_anchors(settings), workers=workers)
    findings = [f.describe() for f in sorted(report.findings)]
    print(
        json.dumps(
            {
                "ok": report.ok,
                "findings": findings,
                "events": report.events,
                "aggregates": report.aggregates,
                "leaves": report.leaves,
                "unlogged": report.unlogged,
                "checkpoints": report.checkpoints,
                "keys": len(report.keys),
                "seconds": round(report.seconds, 3),
                "latest_checkpoint": report.latest_checkpoint,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
