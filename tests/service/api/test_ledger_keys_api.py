"""``GET /v1/ledger/keys`` lists each ledger key with its window of positions: where it was introduced,
the first position it signs, the rotation that retired it and a recorded compromise (SQLite and
PostgreSQL); the windows are the ones ``verify`` enforces."""

from __future__ import annotations

from fastapi.testclient import TestClient

from domain.integrity.keys import Signer
from service.app import create_app
from service.bootstrap import Services
from service.ops.verify import verify_ledger
from service.ops.workload import append_events

ACTOR = "user:admin"


def test_each_key_is_listed_with_its_window(services: Services) -> None:
    genesis = services.ledger.signer.key_id
    append_events(services.ledger, 5, batch=5)
    second, third = Signer.generate(), Signer.generate()
    first_rotation = services.ledger.rotate_key(second, reason="scheduled", actor=ACTOR).position
    append_events(services.ledger, 5, batch=5)
    second_rotation = services.ledger.rotate_key(third, reason="scheduled", actor=ACTOR).position
    revocation = services.ledger.revoke_key(genesis, 3, reason="leaked", actor=ACTOR).position

    with TestClient(create_app(services.settings, run_projector=False, services=services)) as http:
        response = http.get("/v1/ledger/keys")

    assert response.status_code == 200, response.text
    keys = {k["key_id"]: k for k in response.json()}
    assert keys[genesis] | {"public_key_pem": None} == {
        "key_id": genesis,
        "public_key_pem": None,
        "current": False,
        "introduced_at": 1,
        "signs_from": 1,
        "retired_at": first_rotation,
        "compromised_since": 3,
        "revoked_at": revocation,
    }
    assert (keys[second.key_id]["introduced_at"], keys[second.key_id]["signs_from"]) == (
        first_rotation,
        first_rotation + 1,
    )
    assert keys[second.key_id]["retired_at"] == second_rotation
    assert keys[second.key_id]["compromised_since"] is None
    assert keys[third.key_id]["current"] is True
    assert keys[third.key_id]["signs_from"] == second_rotation + 1
    assert keys[third.key_id]["retired_at"] is None
    report = verify_ledger(services.settings, workers=1)
    assert {kid: (w.first, w.last) for kid, w in report.windows.items()} == {
        kid: (k["signs_from"], k["retired_at"]) for kid, k in keys.items()
    }
