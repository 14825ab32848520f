"""ApiKey: recorded by digest only, issued to active principals, revoked once (no database)."""

from __future__ import annotations

import pytest

from domain.credentials import ApiKey, api_key_id, key_digest
from domain.errors import ApiKeyAlreadyRevoked, PrincipalDeactivated
from domain.principal import Principal

ADMIN = "user:admin"
TOKEN = "mll_" + "x" * 40


def _alice() -> Principal:
    return Principal(name="alice", kind="user", roles=["predictor"], actor=ADMIN)


def test_a_key_is_known_by_the_digest_of_the_token_only() -> None:
    key = ApiKey.issue(_alice(), key_digest(TOKEN), "laptop", actor=ADMIN)

    assert key.digest == key_digest(TOKEN)
    assert TOKEN not in repr(vars(key))
    assert key.id == api_key_id(key_digest(TOKEN))


def test_an_issued_key_belongs_to_its_principal_and_is_not_revoked() -> None:
    alice = _alice()

    key = ApiKey.issue(alice, key_digest(TOKEN), "laptop", actor=ADMIN)

    assert (key.principal_id, key.label, key.revoked) == (str(alice.id), "laptop", False)


def test_a_deactivated_principal_gets_no_key() -> None:
    alice = _alice()
    alice.deactivate("left", actor=ADMIN)

    with pytest.raises(PrincipalDeactivated):
        ApiKey.issue(alice, key_digest(TOKEN), "laptop", actor=ADMIN)


def test_a_revoked_key_is_marked_revoked() -> None:
    key = ApiKey.issue(_alice(), key_digest(TOKEN), "laptop", actor=ADMIN)

    key.revoke("lost", actor=ADMIN)

    assert key.revoked
    assert isinstance(key.pending_events[-1], ApiKey.Revoked)


def test_a_key_is_revoked_once() -> None:
    key = ApiKey.issue(_alice(), key_digest(TOKEN), "laptop", actor=ADMIN)
    key.revoke("lost", actor=ADMIN)

    with pytest.raises(ApiKeyAlreadyRevoked):
        key.revoke("again", actor=ADMIN)


def test_different_tokens_have_different_digests() -> None:
    assert key_digest(TOKEN) != key_digest(TOKEN + "y")
    assert key_digest(TOKEN).startswith("sha256:")
