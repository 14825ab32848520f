"""Authentication remembered by one process still sees revocations and role changes made by another at once."""

from __future__ import annotations

import pytest

from domain.errors import Unauthenticated
from service.application.auth import authenticate, new_token
from service.application.ledger import SYSTEM_ACTOR
from service.bootstrap import Services, open_services


def test_another_process_revoking_or_regranting_takes_effect_at_once(services: Services) -> None:
    ledger = services.ledger
    person = ledger.register_principal("pat", "user", ["auditor"], actor=SYSTEM_ACTOR)
    token = new_token()
    key = ledger.issue_api_key(person.id, token, "pat's key", actor=SYSTEM_ACTOR)
    other = open_services(services.settings)  # a second process's view of the same ledger
    try:
        assert authenticate(ledger, token).roles == ["auditor"]
        assert authenticate(ledger, token).roles == ["auditor"]  # remembered

        other.ledger.grant_role(person.id, "operator", actor=SYSTEM_ACTOR)
        assert sorted(authenticate(ledger, token).roles) == ["auditor", "operator"]

        other.ledger.revoke_api_key(key.id, "laptop lost", actor=SYSTEM_ACTOR)
        with pytest.raises(Unauthenticated):
            authenticate(ledger, token)
    finally:
        other.close()
