"""LedgerKeyring: the chain of the ledger's signing keys (no database)."""

from __future__ import annotations

import pytest

from domain.errors import (
    InvalidPayload,
    KeyAlreadyInKeyring,
    LedgerKeyAlreadyRevoked,
    LedgerKeyNotInKeyring,
    LedgerKeyStillCurrent,
)
from domain.integrity.keys import Signer, public_key_pem
from domain.integrity.ledger_key import KEYRING_ID, LedgerKeyring

SYSTEM = "system"


def _keyring() -> tuple[LedgerKeyring, Signer]:
    genesis = Signer.generate()
    keyring = LedgerKeyring(key_id=genesis.key_id, public_key_pem=public_key_pem(genesis.public_key), actor=SYSTEM)
    return keyring, genesis


def _rotate(keyring: LedgerKeyring, signer: Signer, reason: str = "scheduled") -> None:
    keyring.rotate(signer.key_id, public_key_pem(signer.public_key), reason, actor=SYSTEM)


def test_there_is_one_keyring_per_ledger() -> None:
    keyring, _ = _keyring()

    assert keyring.id == KEYRING_ID


def test_the_genesis_key_is_current() -> None:
    keyring, genesis = _keyring()

    assert keyring.current_key_id == genesis.key_id
    assert list(keyring.keys) == [genesis.key_id]


def test_a_rotation_makes_the_new_key_current_and_keeps_the_old_one() -> None:
    keyring, genesis = _keyring()
    successor = Signer.generate()

    _rotate(keyring, successor)

    assert keyring.current_key_id == successor.key_id
    assert set(keyring.keys) == {genesis.key_id, successor.key_id}


def test_a_rotation_names_the_key_it_replaces() -> None:
    keyring, genesis = _keyring()

    _rotate(keyring, Signer.generate(), "compromised")

    rotated = keyring.pending_events[-1]
    assert isinstance(rotated, LedgerKeyring.Rotated)
    assert (rotated.previous_key_id, rotated.reason) == (genesis.key_id, "compromised")


def test_rotating_to_the_current_key_is_refused() -> None:
    keyring, genesis = _keyring()

    with pytest.raises(KeyAlreadyInKeyring) as caught:
        _rotate(keyring, genesis)

    assert caught.value.field == "key_id"


def test_rotating_back_to_a_retired_key_is_refused() -> None:
    keyring, genesis = _keyring()
    successor = Signer.generate()
    _rotate(keyring, successor)

    with pytest.raises(KeyAlreadyInKeyring):
        _rotate(keyring, genesis)

    assert keyring.current_key_id == successor.key_id


def test_a_retired_key_is_revoked_from_a_position() -> None:
    keyring, genesis = _keyring()
    _rotate(keyring, Signer.generate())

    keyring.revoke(genesis.key_id, 12, "key file leaked", actor=SYSTEM)

    revoked = keyring.pending_events[-1]
    assert isinstance(revoked, LedgerKeyring.Revoked)
    assert (revoked.key_id, revoked.compromised_since) == (genesis.key_id, 12)
    assert keyring.compromised_since == {genesis.key_id: 12}


def test_the_current_key_is_revoked_only_after_a_rotation() -> None:
    keyring, genesis = _keyring()

    with pytest.raises(LedgerKeyStillCurrent):
        keyring.revoke(genesis.key_id, 0, "leaked", actor=SYSTEM)


def test_a_key_the_keyring_never_held_cannot_be_revoked() -> None:
    keyring, _ = _keyring()

    with pytest.raises(LedgerKeyNotInKeyring) as caught:
        keyring.revoke("0123456789abcdef", 0, "leaked", actor=SYSTEM)

    assert caught.value.field == "key_id"


def test_a_key_is_revoked_once() -> None:
    keyring, genesis = _keyring()
    _rotate(keyring, Signer.generate())
    keyring.revoke(genesis.key_id, 5, "leaked", actor=SYSTEM)

    with pytest.raises(LedgerKeyAlreadyRevoked):
        keyring.revoke(genesis.key_id, 3, "leaked earlier", actor=SYSTEM)


@pytest.mark.parametrize("position", [-1, True, "7"])
def test_a_compromise_position_is_a_ledger_position(position: object) -> None:
    keyring, genesis = _keyring()
    _rotate(keyring, Signer.generate())

    with pytest.raises(InvalidPayload) as caught:
        keyring.revoke(genesis.key_id, position, "leaked", actor=SYSTEM)  # type: ignore[arg-type]

    assert caught.value.field == "compromised_since"
