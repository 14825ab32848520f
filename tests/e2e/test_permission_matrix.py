"""Every endpoint, called with every role, with no key and with a revoked key,
answers exactly as the README's permission table says."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.governance_world import granted, issued, second_admin
from support.ledger import ADMIN_KEY, REPO

from domain.roles import Role
from mlledger.client import LedgerClient
from service.app import create_app
from service.bootstrap import Services

ROLES = [role.value for role in Role]


@dataclass(frozen=True)
class Rule:
    """One row of the README table."""

    method: str
    path: str
    who: str

    def allows(self, role: str) -> bool:
        roles = self.who.split(";")[0].strip()
        if roles in ("public", "any role"):
            return True
        return role in {r.strip() for r in roles.split(",")}


def readme_rules() -> list[Rule]:
    text = (REPO / "README.md").read_text()
    section = text.split("<!-- permissions:start -->")[1].split("<!-- permissions:end -->")[0]
    rules = []
    for line in section.strip().splitlines()[2:]:
        method, path, who = (cell.strip() for cell in line.strip("|").split("|"))
        rules.append(Rule(method, path, who))
    return rules


RULES = readme_rules()


@pytest.fixture(scope="module")
def sqlite_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    from conftest import make_settings

    from service.bootstrap import open_services

    services = open_services(make_settings("sqlite", Path(tmp_path_factory.mktemp("perm")) / "data"), migrate=True)
    yield services
    services.close()


@pytest.fixture(scope="module")
def clients(sqlite_services: Services) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with TestClient(create_app(sqlite_services.settings, run_projector=False, services=sqlite_services)) as http:
        admin = LedgerClient(api_key=ADMIN_KEY, http=http)
        second = second_admin(http, admin)
        keys = {}
        for role in ROLES:
            principal = admin.create_principal(f"only-{role}", [])
            granted(admin, second, principal.id, role)
            keys[role] = issued(admin, second, principal.id)
        revoked_owner = admin.create_principal("revoked", [])
        for role in ROLES:
            granted(admin, second, revoked_owner.id, role)
        revoked = issued(admin, second, revoked_owner.id)
        key_id = sqlite_services.ledger.api_key_of(revoked).id
        admin.request("DELETE", f"/v1/api-keys/{key_id}")
        keys["revoked"] = revoked
        yield http, keys


def _url(path: str) -> str:
    filled = re.sub(r"\{(version|notification_id)\}", "1", path)
    filled = re.sub(r"\{role\}", "auditor", filled)
    filled = re.sub(r"\{name\}", "no-such-name", filled)
    return re.sub(r"\{[a-z_]+\}", str(uuid.uuid4()), filled)


def _call(http: TestClient, rule: Rule, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return http.request(rule.method, _url(rule.path), headers=headers, json={}).status_code


def test_the_table_lists_every_endpoint_of_the_api(clients: tuple[TestClient, dict[str, str]]) -> None:
    http, _ = clients
    served = {
        (method.upper(), path)
        for path, operations in http.app.openapi()["paths"].items()  # type: ignore[attr-defined]
        for method in operations
    }

    assert served == {(rule.method, rule.path) for rule in RULES}


@pytest.mark.parametrize("rule", RULES, ids=[f"{r.method} {r.path}" for r in RULES])
def test_each_role_is_allowed_or_forbidden_as_the_table_says(
    clients: tuple[TestClient, dict[str, str]], rule: Rule
) -> None:
    http, keys = clients
    outcomes = {role: _call(http, rule, keys[role]) for role in ROLES}

    for role, code in outcomes.items():
        assert code < 500, f"{role}: {code}"
        if rule.allows(role):
            assert code not in (401, 403), f"{role} should be allowed, got {code}"
        else:
            assert code == 403, f"{role} should be forbidden, got {code}"


@pytest.mark.parametrize("rule", RULES, ids=[f"{r.method} {r.path}" for r in RULES])
def test_no_key_and_a_revoked_key_are_unauthenticated(clients: tuple[TestClient, dict[str, str]], rule: Rule) -> None:
    http, keys = clients
    expected = 401 if rule.who != "public" else None

    for key in (None, keys["revoked"], "mll_not-a-real-key-but-long-enough-to-try"):
        code = _call(http, rule, key)
        assert code < 500
        if expected is not None:
            assert code == expected, f"{key!r}: {code}"
        else:
            assert code not in (401, 403)
