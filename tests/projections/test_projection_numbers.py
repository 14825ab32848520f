"""Values that canonical JSON writes as digits (a float of 2**53 or more) are
read back as integers; the read models must still take them."""

from __future__ import annotations

import sqlalchemy as sa

from projections import registry
from service.bootstrap import Services


def test_a_huge_float_parameter_is_projected_without_stalling(services: Services) -> None:
    run = services.ledger.start_run(
        name="big",
        mode="client",
        pipeline=None,
        pipeline_version=None,
        dataset_version_ids=[],
        code_version_id=None,
        params={"budget": 1e16, "tiny": 5e-324},
        seed=0,
        device="cpu",
        actor="user:alice",
    )

    services.runner.catch_up()

    with services.engine.connect() as conn:
        params = conn.execute(
            sa.select(registry.reg_runs.c.params).where(registry.reg_runs.c.id == run.id)
        ).scalar_one()
    assert '"budget":10000000000000000' in params
    assert all(services.runner.position(name) == services.ledger.position() for name in services.runner.projections)
