"""When each ledger key may sign: its window of ledger positions, and its compromise.

A key signs from the position of the event that introduced it (the genesis
event, which it signs itself, or the position after the rotation that named it)
to the position of the rotation that retired it (signed by the key it retires,
its last signature). The current key's window is open. A retired key may also be
revoked: it was compromised from a position on, and what it signed after that
position is not trusted, inside its window or not.
"""

from __future__ import annotations

from dataclasses import dataclass

COMPROMISED_MARK = "after its compromise at position"
"""The words every refusal of an event signed after a recorded compromise carries (reports list those events)."""


@dataclass(frozen=True)
class KeyWindow:
    """The positions at which one ledger key may sign."""

    key_id: str
    first: int
    """The first ledger position the key may sign."""
    last: int | None = None
    """The last position (the rotation that retired it); None while the key is current."""
    compromised_since: int | None = None
    """Set by a revocation: events the key signed after this position are not trusted."""
    revoked_at: int | None = None
    """The position of the revocation event."""

    def describe(self) -> str:
        """The window in words, e.g. ``positions 1 to 57`` or ``positions 58 onward (current)``."""
        if self.last is None:
            return f"positions {self.first} onward (current)"
        return f"positions {self.first} to {self.last}"

    def refusal(self, position: int) -> str | None:
        """Why an event at ``position`` signed by this key is not trusted, or None when it is."""
        compromised = self.compromised_since
        if (
            self.first <= position
            and (self.last is None or position <= self.last)
            and (compromised is None or position <= compromised)
        ):
            return None
        if compromised is not None and position > compromised:
            return (
                f"signed by ledger key {self.key_id} {COMPROMISED_MARK} {compromised} "
                f"(revoked at position {self.revoked_at}; its window: {self.describe()})"
            )
        return (
            f"signed by ledger key {self.key_id} at position {position}, outside the key's window ({self.describe()})"
        )
