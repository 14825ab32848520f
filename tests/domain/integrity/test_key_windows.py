"""KeyWindow: where a ledger key may sign, and what its recorded compromise taints (no database)."""

from __future__ import annotations

import pytest

from domain.integrity.key_lifetimes import COMPROMISED_MARK, KeyWindow

RETIRED = KeyWindow("aaaaaaaaaaaaaaaa", first=1, last=20)
CURRENT = KeyWindow("bbbbbbbbbbbbbbbb", first=21)


@pytest.mark.parametrize("position", [1, 10, 20])
def test_a_retired_key_signs_from_its_introduction_to_its_retirement(position: int) -> None:
    assert RETIRED.refusal(position) is None


def test_a_retired_key_signing_after_its_retirement_is_refused_with_its_window() -> None:
    assert RETIRED.refusal(21) == (
        "signed by ledger key aaaaaaaaaaaaaaaa at position 21, outside the key's window (positions 1 to 20)"
    )


def test_a_key_signing_before_its_introduction_is_refused() -> None:
    assert CURRENT.refusal(20) is not None
    assert CURRENT.refusal(10**9) is None


def test_the_current_keys_window_is_open() -> None:
    assert CURRENT.describe() == "positions 21 onward (current)"


def test_a_compromise_taints_only_what_the_key_signed_after_the_position() -> None:
    revoked = KeyWindow("aaaaaaaaaaaaaaaa", first=1, last=20, compromised_since=12, revoked_at=30)

    assert [p for p in range(1, 25) if revoked.refusal(p) is not None] == list(range(13, 25))
    assert all(COMPROMISED_MARK in str(revoked.refusal(p)) for p in range(13, 25))
    assert "revoked at position 30" in str(revoked.refusal(13))
