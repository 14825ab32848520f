"""``bench/generate_ledger.py`` and ``bench/at_scale.py`` at a tiny scale: the generated ledger is genuinely
signed and chained (``mlledger verify`` passes), every read model caught up, and the scale benchmark measures
it end to end (its timings are figures, not asserted)."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from support.ledger import PG_URL, REPO, require_postgres

from bench.append import drop_schema
from bench.generate_ledger import Generated, generate, ledger_settings
from service.bootstrap import open_services
from service.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def generated() -> Iterator[tuple[Settings, Generated]]:
    require_postgres()
    settings = ledger_settings(PG_URL, f"bench_{secrets.token_hex(6)}")
    try:
        yield settings, generate(settings, 4_000, writers=2, batch=200, serving_models=2, subject_every=10)
    finally:
        drop_schema(PG_URL, settings.database_schema)


def test_the_generator_writes_governance_and_predictions_and_projects_them(
    generated: tuple[Settings, Generated],
) -> None:
    settings, result = generated

    services = open_services(settings)
    try:
        head = services.ledger.position()
        lags = {name: head - services.runner.position(name) for name in services.runner.projections}
        with services.engine.connect() as conn:
            by_model = dict(
                conn.execute(sa.text("SELECT model_name, count(*) FROM predictions GROUP BY model_name")).all()
            )
            subjects = conn.execute(sa.text("SELECT count(*) FROM predictions WHERE subject_id IS NOT NULL")).scalar()
            approvals = conn.execute(sa.text("SELECT count(*) FROM audit_events WHERE event_type = 'ApprovalGranted'"))
    finally:
        services.close()

    assert head == result.events >= 4_000
    assert set(lags.values()) == {0}
    assert set(by_model) == {"credit", "serving-1"} and sum(by_model.values()) > 1_000
    assert subjects and approvals.scalar()


def test_the_scale_benchmark_verifies_exports_and_measures_the_generated_ledger(
    generated: tuple[Settings, Generated],
) -> None:
    settings, _ = generated

    done = subprocess.run(
        [
            sys.executable,
            "bench/at_scale.py",
            "--schema",
            settings.database_schema,
            "--database-url",
            PG_URL,
            "--queries",
            "5",
            "--export-predictions",
            "300",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode in (0, 1), (
        done.stdout[-2000:] + done.stderr[-3000:]
    )  # 1: a latency target missed on a busy machine
    out = done.stdout
    assert "mlledger verify: exit 0" in out, out + done.stderr[-2000:]
    assert "mlledger export --model credit (300 predictions): exit 0" in out, out
    assert "mlledger verify-bundle: exit 0" in out, out
    assert "decision lookup" in out and "audit by actor" in out
