"""Principal: roles, signing keys and deactivation (no database)."""

from __future__ import annotations

import pytest

from domain.errors import (
    InvalidPayload,
    PossessionNotProven,
    PrincipalDeactivated,
    RevokedSigningKey,
    RoleAlreadyHeld,
    RoleNotHeld,
    SigningKeyAlreadyRegistered,
    SigningKeyAlreadyRevoked,
    SigningKeyNotOwn,
    SigningKeyNotRegistered,
)
from domain.integrity.keys import Signer, public_key_pem
from domain.principal import POSSESSION_TYPE, Principal, possession_message, possession_statement

ADMIN = "user:admin"


def _alice(roles: list[str] | None = None) -> Principal:
    return Principal(name="alice", kind="user", roles=roles or ["data_scientist"], actor=ADMIN)


def _proof(principal: Principal, signer: Signer) -> str:
    return signer.sign(possession_message(str(principal.id), signer.key_id))


def _own_key(principal: Principal) -> Signer:
    signer = Signer.generate()
    principal.register_signing_key(
        public_key_pem(signer.public_key), _proof(principal, signer), actor=str(principal.id)
    )
    return signer


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

    kid = alice.register_signing_key(pem, _proof(alice, signer), actor=str(alice.id))

    assert kid == signer.key_id
    assert alice.signing_key(kid) == pem


def test_a_signing_key_is_registered_once() -> None:
    alice = _alice()
    signer = Signer.generate()
    pem = public_key_pem(signer.public_key)
    alice.register_signing_key(pem, _proof(alice, signer), actor=str(alice.id))

    with pytest.raises(SigningKeyAlreadyRegistered) as caught:
        alice.register_signing_key(pem, _proof(alice, signer), actor=str(alice.id))

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


# -- Proof of possession -----------------------------------------------------------


def test_registering_a_key_records_the_owners_proof_of_possession_before_the_key() -> None:
    alice = _alice()
    signer = Signer.generate()
    proof = _proof(alice, signer)

    alice.register_signing_key(public_key_pem(signer.public_key), proof, actor=str(alice.id))

    proven, registered = alice.pending_events[-2:]
    assert isinstance(proven, Principal.SigningKeyPossessionProven)
    assert isinstance(registered, Principal.SigningKeyRegistered)
    assert proven.statement == {"type": POSSESSION_TYPE, "principal_id": str(alice.id), "key_id": signer.key_id}
    assert proven.proof == proof


def test_an_admin_cannot_register_a_signing_key_for_someone_else_even_with_the_keys_proof() -> None:
    alice = _alice(["approver"])
    signer = Signer.generate()  # say the admin generated it and holds the private key

    with pytest.raises(SigningKeyNotOwn) as caught:
        alice.register_signing_key(public_key_pem(signer.public_key), _proof(alice, signer), actor=ADMIN)

    assert caught.value.field == "principal_id"
    assert alice.signing_keys == {}


@pytest.mark.parametrize(
    "proof",
    [
        pytest.param("", id="empty"),
        pytest.param("not base64!", id="not-base64"),
        pytest.param("c2lnbmF0dXJl", id="not-a-signature"),
    ],
)
def test_a_signing_key_without_a_valid_proof_of_possession_is_refused(proof: str) -> None:
    alice = _alice()

    with pytest.raises(PossessionNotProven) as caught:
        alice.register_signing_key(public_key_pem(Signer.generate().public_key), proof, actor=str(alice.id))

    assert caught.value.field == "proof"
    assert alice.signing_keys == {}


def test_a_proof_made_by_another_key_or_for_another_principal_is_refused() -> None:
    alice, bob = _alice(), Principal(name="bob", kind="user", roles=["approver"], actor=ADMIN)
    key, other = Signer.generate(), Signer.generate()
    pem = public_key_pem(key.public_key)
    statements = {
        "signed by another key": other.sign(possession_message(str(alice.id), key.key_id)),
        "made for bob": key.sign(possession_message(str(bob.id), key.key_id)),
        "naming another key": key.sign(possession_message(str(alice.id), other.key_id)),
    }

    for proof in statements.values():
        with pytest.raises(PossessionNotProven):
            alice.register_signing_key(pem, proof, actor=str(alice.id))

    assert alice.signing_keys == {}


def test_the_possession_statement_names_the_principal_and_the_key() -> None:
    assert possession_statement("p-1", "k-1") == {"type": POSSESSION_TYPE, "principal_id": "p-1", "key_id": "k-1"}


# -- Revocation --------------------------------------------------------------------


def test_a_revoked_signing_key_signs_nothing_more() -> None:
    alice = _alice(["approver"])
    signer = _own_key(alice)

    alice.revoke_signing_key(signer.key_id, "laptop stolen", actor=ADMIN)

    assert isinstance(alice.pending_events[-1], Principal.SigningKeyRevoked)
    with pytest.raises(RevokedSigningKey) as caught:
        alice.signing_key(signer.key_id)
    assert caught.value.field == "key_id" and "was revoked" in caught.value.detail


def test_revoking_one_key_leaves_the_others_in_force() -> None:
    alice = _alice(["approver"])
    old, new = _own_key(alice), _own_key(alice)

    alice.revoke_signing_key(old.key_id, "rotated", actor=str(alice.id))

    assert alice.signing_key(new.key_id) == public_key_pem(new.public_key)


def test_a_key_is_revoked_once_and_only_a_registered_one() -> None:
    alice = _alice(["approver"])
    signer = _own_key(alice)
    alice.revoke_signing_key(signer.key_id, "rotated", actor=ADMIN)

    with pytest.raises(SigningKeyAlreadyRevoked):
        alice.revoke_signing_key(signer.key_id, "again", actor=ADMIN)
    with pytest.raises(SigningKeyNotRegistered):
        alice.revoke_signing_key("0123456789abcdef", "never registered", actor=ADMIN)


def test_a_revoked_key_cannot_be_registered_again() -> None:
    alice = _alice(["approver"])
    signer = _own_key(alice)
    alice.revoke_signing_key(signer.key_id, "compromised", actor=ADMIN)

    with pytest.raises(SigningKeyAlreadyRegistered):
        alice.register_signing_key(public_key_pem(signer.public_key), _proof(alice, signer), actor=str(alice.id))
