"""Bad input to the ledger gets a clear error and nothing is stored."""

from __future__ import annotations

import uuid

import pytest
from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidPayload, PayloadTooLarge, UnknownEventType
from service.bootstrap import Services


def _register(services: Services, **overrides: object) -> None:
    fields: dict[str, object] = {
        "name": "credit",
        "digest": "sha256:" + "a" * 64,
        "size": 10,
        "format": "csv",
        "schema": [{"name": "age", "type": "int"}],
        "row_count": 1,
        "datasheet": {},
        "source": "upload",
        "actor": "user:alice",
    }
    fields.update(overrides)
    services.ledger.register_dataset_version(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (float("nan"), "payload.datasheet.motivation"),
        (float("inf"), "payload.datasheet.motivation"),
        (float("-inf"), "payload.datasheet.motivation"),
        ("bad \ud800 text", "payload.datasheet.motivation"),
        (2**60, "payload.datasheet.motivation"),
    ],
    ids=["nan", "infinity", "minus-infinity", "lone-surrogate", "unsafe-integer"],
)
def test_unrepresentable_value_is_refused_naming_the_field(services: Services, value: object, field: str) -> None:
    before = services.ledger.position()

    with pytest.raises(InvalidPayload) as caught:
        _register(services, datasheet={"motivation": value})

    assert caught.value.field == field
    assert services.ledger.position() == before


def test_payload_over_the_limit_is_refused(services: Services) -> None:
    before = services.ledger.position()
    limit = services.settings.max_payload_bytes

    with pytest.raises(PayloadTooLarge) as caught:
        _register(services, datasheet={"motivation": "x" * limit})

    assert str(limit) in caught.value.detail
    assert services.ledger.position() == before


class Stranger(Aggregate):
    """An aggregate the ledger does not know."""

    @event("Appeared")
    def __init__(self, actor: str) -> None:
        self.actor = actor


def test_unknown_event_type_is_refused(services: Services) -> None:
    before = services.ledger.position()

    with pytest.raises(UnknownEventType):
        services.ledger.save(Stranger(actor="user:mallory"))

    assert services.ledger.position() == before


def test_a_failed_event_in_a_batch_stores_none_of_the_batch(services: Services) -> None:
    from domain.principal import Principal

    good = Principal(name="fine", kind="user", roles=[], actor="admin")
    bad = Principal(name="broken", kind="user", roles=[], actor="admin")
    bad.trigger_event(Principal.RoleGranted, role=float("nan"), actor="admin")  # type: ignore[arg-type]
    before = services.ledger.position()

    with pytest.raises(InvalidPayload):
        services.ledger.save(good, bad)

    assert services.ledger.position() == before
    with pytest.raises(Exception, match="no Principal"):
        services.ledger.get(str(good.id), Principal)


def test_unknown_aggregate_id_is_not_found(services: Services) -> None:
    from domain.errors import NotFound

    with pytest.raises(NotFound):
        services.ledger.grant_role(str(uuid.uuid4()), "auditor", actor="admin")
    with pytest.raises(NotFound):
        services.ledger.grant_role("not-a-uuid", "auditor", actor="admin")
