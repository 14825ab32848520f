"""Tests of the aggregates' own rules and of the event-type registry (no database)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from eventsourcing.domain import Aggregate

from domain import catalog
from domain.aggregate import aggregate_class, aggregate_type_of, event_class, known_topics
from domain.dataset import DatasetVersion
from domain.errors import InvalidPayload, RuleViolated, UnknownEventType
from domain.integrity.keys import InvalidKey, Signer, public_key_pem
from domain.integrity.ledger_key import LedgerKeyring
from domain.principal import Principal, possession_message

ACTOR = "user:admin"
TOPIC_FORM = re.compile(r"mlledger\.[a-z][a-z0-9_]*\.([A-Z][A-Za-z0-9]*)\.v[1-9][0-9]*")
GOOD_DIGEST = "sha256:" + "ab" * 32


def _principal(roles: list[str] | None = None) -> Principal:
    return Principal(name="alice", kind="user", roles=roles or ["data_scientist"], actor=ACTOR)


def _pem() -> str:
    return public_key_pem(Signer.generate().public_key)


def _proof(principal: Principal, signer: Signer) -> str:
    return signer.sign(possession_message(str(principal.id), signer.key_id))


# -- Principal ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "roles", "field"),
    [
        pytest.param("", "user", [], "name", id="empty-name"),
        pytest.param("   ", "user", [], "name", id="blank-name"),
        pytest.param("alice", "robot", [], "kind", id="unknown-kind"),
        pytest.param("alice", "user", ["auditor", "wizard"], "roles", id="unknown-role"),
    ],
)
def test_an_invalid_registration_is_refused_naming_the_field(
    name: str, kind: str, roles: list[str], field: str
) -> None:
    with pytest.raises(InvalidPayload) as caught:
        Principal.check_registration(name, kind, roles)

    assert caught.value.field == field


def test_registration_roles_come_back_sorted_without_duplicates() -> None:
    assert Principal.check_registration("svc", "service", ["operator", "auditor", "operator"]) == [
        "auditor",
        "operator",
    ]


def test_granting_a_role_adds_it() -> None:
    principal = _principal()

    principal.grant_role("approver", actor=ACTOR)

    assert principal.roles == ["approver", "data_scientist"]


def test_granting_a_role_already_held_is_refused() -> None:
    principal = _principal(["approver"])

    with pytest.raises(RuleViolated) as caught:
        principal.grant_role("approver", actor=ACTOR)

    assert caught.value.field == "role"


def test_granting_an_unknown_role_is_refused() -> None:
    principal = _principal()

    with pytest.raises(InvalidPayload):
        principal.grant_role("wizard", actor=ACTOR)


def test_revoking_a_role_removes_it() -> None:
    principal = _principal(["approver", "auditor"])

    principal.revoke_role("approver", actor=ACTOR)

    assert principal.roles == ["auditor"]


def test_revoking_a_role_not_held_is_refused() -> None:
    principal = _principal(["auditor"])

    with pytest.raises(RuleViolated) as caught:
        principal.revoke_role("approver", actor=ACTOR)

    assert caught.value.field == "role"


def test_a_refused_command_records_no_event() -> None:
    principal = _principal(["approver"])
    principal.collect_events()

    with pytest.raises(RuleViolated):
        principal.grant_role("approver", actor=ACTOR)

    assert principal.collect_events() == []


def test_a_registered_signing_key_is_kept_under_its_key_id() -> None:
    principal = _principal()
    signer = Signer.generate()
    pem = public_key_pem(signer.public_key)

    kid = principal.register_signing_key(pem, _proof(principal, signer), actor=str(principal.id))

    assert kid == signer.key_id
    assert principal.signing_keys == {signer.key_id: pem}


@pytest.mark.parametrize(
    "pem",
    [
        pytest.param("not a key", id="not-pem"),
        pytest.param("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", id="garbled-pem"),
        pytest.param(
            public_key_pem(ec.generate_private_key(ec.SECP256R1()).public_key()),  # type: ignore[arg-type]
            id="not-ed25519",
        ),
    ],
)
def test_a_signing_key_that_is_not_an_ed25519_public_key_is_refused(pem: str) -> None:
    principal = _principal()

    with pytest.raises(InvalidKey):
        principal.register_signing_key(pem, "c2lnbmF0dXJl", actor=str(principal.id))


def test_registering_the_same_signing_key_twice_is_refused() -> None:
    principal = _principal()
    signer = Signer.generate()
    pem = public_key_pem(signer.public_key)
    principal.register_signing_key(pem, _proof(principal, signer), actor=str(principal.id))

    with pytest.raises(RuleViolated):
        principal.register_signing_key(pem, _proof(principal, signer), actor=str(principal.id))


# -- DatasetVersion ------------------------------------------------------------


def _dataset_registration(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": "credit",
        "digest": GOOD_DIGEST,
        "size": 1024,
        "row_count": 10,
        "schema": [{"name": "age", "type": "int"}],
        "datasheet": {"motivation": "credit scoring", "pii_columns": ["name"]},
    }
    return {**fields, **changes}


def test_a_valid_dataset_version_passes_its_checks() -> None:
    DatasetVersion.check_registration(**_dataset_registration())


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"digest": "sha256:" + "AB" * 32}, "digest", id="uppercase-digest"),
        pytest.param({"digest": "md5:" + "ab" * 16}, "digest", id="other-algorithm"),
        pytest.param({"digest": "sha256:" + "ab" * 31}, "digest", id="short-digest"),
        pytest.param({"digest": "ab" * 32}, "digest", id="no-prefix"),
        pytest.param({"digest": GOOD_DIGEST + "\n"}, "digest", id="trailing-newline"),
        pytest.param({"size": -1}, "size", id="negative-size"),
        pytest.param({"row_count": -1}, "row_count", id="negative-row-count"),
        pytest.param({"schema": [{"type": "int"}]}, "schema.0", id="column-without-name"),
        pytest.param({"datasheet": {"mood": "sunny"}}, "datasheet.mood", id="unknown-datasheet-field"),
        pytest.param({"datasheet": {"pii_columns": "email"}}, "datasheet.pii_columns", id="pii-columns-a-string"),
        pytest.param({"datasheet": {"pii_columns": ["email", 3]}}, "datasheet.pii_columns", id="pii-columns-not-str"),
        pytest.param(
            {"datasheet": {"protected_attributes": {"age": True}}},
            "datasheet.protected_attributes",
            id="protected-attributes-a-dict",
        ),
    ],
)
def test_an_invalid_dataset_version_is_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        DatasetVersion.check_registration(**_dataset_registration(**changes))

    assert caught.value.field == field


# -- LedgerKeyring ---------------------------------------------------------------


def _keyring() -> tuple[LedgerKeyring, Signer]:
    genesis = Signer.generate()
    keyring = LedgerKeyring(key_id=genesis.key_id, public_key_pem=public_key_pem(genesis.public_key), actor=ACTOR)
    return keyring, genesis


def test_a_rotation_makes_the_new_key_current_and_keeps_the_old_one() -> None:
    keyring, genesis = _keyring()
    new = Signer.generate()

    keyring.rotate(new.key_id, public_key_pem(new.public_key), reason="scheduled", actor=ACTOR)

    assert keyring.current_key_id == new.key_id
    assert set(keyring.keys) == {genesis.key_id, new.key_id}


def test_rotating_to_the_current_key_is_refused() -> None:
    keyring, genesis = _keyring()

    with pytest.raises(RuleViolated) as caught:
        keyring.rotate(genesis.key_id, public_key_pem(genesis.public_key), reason="again", actor=ACTOR)

    assert caught.value.field == "key_id"


def test_rotating_back_to_a_retired_key_is_refused() -> None:
    keyring, genesis = _keyring()
    new = Signer.generate()
    keyring.rotate(new.key_id, public_key_pem(new.public_key), reason="scheduled", actor=ACTOR)

    with pytest.raises(RuleViolated):
        keyring.rotate(genesis.key_id, public_key_pem(genesis.public_key), reason="roll back", actor=ACTOR)


# -- The event-type registry ---------------------------------------------------------


def _event_classes() -> list[tuple[type[Aggregate], str, type[Aggregate.Event]]]:
    found = []
    for aggregate in catalog.AGGREGATES:
        for attr, value in vars(aggregate).items():
            if isinstance(value, type) and issubclass(value, Aggregate.Event):
                found.append((aggregate, attr, value))
    return found


EVENT_CLASSES = _event_classes()
TOPICED = [(a, attr, cls) for a, attr, cls in EVENT_CLASSES if getattr(cls, "TOPIC", None) is not None]


def test_only_the_library_base_classes_lack_a_topic() -> None:
    untopiced = {attr for _, attr, cls in EVENT_CLASSES if getattr(cls, "TOPIC", None) is None}

    assert untopiced <= {"Event", "Created"}


@pytest.mark.parametrize(("aggregate", "attr", "cls"), TOPICED, ids=[f"{a.__name__}.{attr}" for a, attr, _ in TOPICED])
def test_each_event_topic_names_its_event_and_a_version(aggregate: type, attr: str, cls: type) -> None:
    match = TOPIC_FORM.fullmatch(cls.TOPIC)  # type: ignore[attr-defined]

    assert match is not None
    assert match.group(1) == attr


@pytest.mark.parametrize(("aggregate", "attr", "cls"), TOPICED, ids=[f"{a.__name__}.{attr}" for a, attr, _ in TOPICED])
def test_each_event_topic_resolves_to_its_class_and_aggregate(aggregate: type, attr: str, cls: type) -> None:
    topic = cls.TOPIC  # type: ignore[attr-defined]

    assert event_class(topic) is cls
    assert aggregate_class(aggregate_type_of(topic)) is aggregate


def test_every_registered_topic_has_the_ledger_form() -> None:
    malformed = [topic for topic in known_topics() if not TOPIC_FORM.fullmatch(topic)]

    assert malformed == []


@pytest.mark.parametrize(
    "topic",
    [
        "mlledger.principal.Unheard.v1",
        "mlledger.principal.Registered.v99",
        "domain.principal:Principal.Registered",
        "",
    ],
)
def test_an_unknown_topic_is_refused(topic: str) -> None:
    with pytest.raises(UnknownEventType) as caught:
        event_class(topic)

    assert caught.value.field == "type"


def test_an_unknown_aggregate_type_is_refused() -> None:
    with pytest.raises(UnknownEventType):
        aggregate_class("Spaceship")
