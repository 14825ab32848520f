"""Principal: roles, signing keys and deactivation (no database)."""

from __future__ import annotations

import pytest

from domain.errors import (
    InvalidPayload,
    PrincipalDeactivated,
    RoleAlreadyHeld,
    RoleNotHeld,
    SigningKeyAlreadyRegistered,
    SigningKeyNotRegistered,
)
from domain.integrity.keys import Signer, public_key_pem
from domain.principal import Principal

ADMIN = "user:admin"


def _alice(roles: list[str] | None = None) -> Principal:
    return Principal(name="alice", kind="user", roles=roles or ["data_scientist"], actor=ADMIN)


def test_a_registered_principal_is_active_with_its_roles() -> None:
    alice = _alice(["approver"])

    assert alice.active and alice.roles == ["approver"]
    assert alice.has_role("approver", "admin")


def test_the_same_name_always_gives_the_same_principal_id() -> None:
    assert Principal.create_id(name="alice") == Principal.create_id(name="alice")


def test_a_granted_role_is_held() -> None:
    alice = _alice()

    alice.grant_role("approver", actor=ADMIN)

    assert alice.roles == ["approver", "data_scientist"]


def test_a_role_already_held_cannot_be_granted_again() -> None:
    alice = _alice()

    with pytest.raises(RoleAlreadyHeld) as caught:
        alice.grant_role("data_scientist", actor=ADMIN)

    assert caught.value.field == "role"


def test_an_unknown_role_cannot_be_granted() -> None:
    with pytest.raises(InvalidPayload) as caught:
        _alice().grant_role("wizard", actor=ADMIN)

    assert caught.value.field == "roles"


def test_a_revoked_role_is_no_longer_held() -> None:
    alice = _alice(["approver", "data_scientist"])

    alice.revoke_role("approver", actor=ADMIN)

    assert alice.roles == ["data_scientist"]
    assert not alice.has_role("approver")


def test_a_role_not_held_cannot_be_revoked() -> None:
    with pytest.raises(RoleNotHeld) as caught:
        _alice().revoke_role("admin", actor=ADMIN)

    assert caught.value.field == "role"


def test_a_registered_signing_key_is_found_by_its_key_id() -> None:
    alice = _alice()
    signer = Signer.generate()
    pem = public_key_pem(signer.public_key)

    kid = alice.register_signing_key(pem, actor=ADMIN)

    assert kid == signer.key_id
    assert alice.signing_key(kid) == pem


def test_a_signing_key_is_registered_once() -> None:
    alice = _alice()
    pem = public_key_pem(Signer.generate().public_key)
    alice.register_signing_key(pem, actor=ADMIN)

    with pytest.raises(SigningKeyAlreadyRegistered) as caught:
        alice.register_signing_key(pem, actor=ADMIN)

    assert caught.value.field == "public_key_pem"


def test_a_key_the_principal_never_registered_is_refused() -> None:
    with pytest.raises(SigningKeyNotRegistered) as caught:
        _alice().signing_key("ed25519:unknown")

    assert caught.value.field == "key_id"
    assert "register it first" in caught.value.detail


def test_a_deactivated_principal_holds_no_role_in_effect() -> None:
    alice = _alice(["approver"])

    alice.deactivate("left the company", actor=ADMIN)

    assert not alice.active
    assert alice.roles == ["approver"]
    assert not alice.has_role("approver")


def test_a_deactivated_principal_may_no_longer_act() -> None:
    alice = _alice()
    alice.deactivate("left the company", actor=ADMIN)

    with pytest.raises(PrincipalDeactivated, match="is deactivated"):
        alice.check_active()


def test_a_principal_is_deactivated_once() -> None:
    alice = _alice()
    alice.deactivate("left the company", actor=ADMIN)

    with pytest.raises(PrincipalDeactivated, match="already deactivated"):
        alice.deactivate("again", actor=ADMIN)
