"""The web console over TestClient: signing in and out, sessions that end when
their key is revoked, role checks, CSRF refusals, audit filters, escaping of
user-controlled text, signature status of approvals, and no external resources."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from support.governance_world import granted, issued, second_admin_key
from support.ledger import ADMIN_KEY, drop_schema, make_settings, require_postgres

from domain.integrity.keys import Signer
from domain.monitor import Monitor
from domain.prediction import Prediction
from domain.report import Report
from domain.statistics.fairness import fairness_report, impact_ratio_violations
from mlledger.client import LedgerClient
from projections import registry as r
from service.app import create_app
from service.bootstrap import Services, open_services
from service.ops.projector import publish_checkpoint_if_due

HOSTILE = "<script>alert('x')</script>"
HOSTILE_NAME = "x<img src=x onerror=alert(1)>"
MODEL = "credit-risk"
# The smallest valid PNG: one transparent pixel.
PIXEL_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@dataclass
class World:
    """A small organisation with one approved, deployed model."""

    services: Services
    app: FastAPI
    keys: dict[str, str]
    ids: dict[str, str]
    run_id: str


def _catch_up(services: Services) -> None:
    services.runner.catch_up()
    publish_checkpoint_if_due(services, force=True)


def _csv() -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["age", "income", "approved"])
    for i in range(20):
        writer.writerow([20 + i, 1000 * i, i % 2])
    return out.getvalue().encode()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if request.param == "postgres":
        require_postgres()
    settings = make_settings(request.param, Path(tmp_path_factory.mktemp("console")) / "data")
    services = open_services(settings, migrate=True)
    try:
        yield from _world(services)
    finally:
        services.close()
        if request.param == "postgres":
            drop_schema(settings.database_schema)


def _world(services: Services) -> Iterator[World]:
    app = create_app(services.settings, run_projector=False, services=services)
    with TestClient(app) as http:
        admin = LedgerClient(api_key=ADMIN_KEY, http=http)
        keys, ids, clients = {"admin": ADMIN_KEY, "admin-2": second_admin_key(admin)}, {}, {}
        second = LedgerClient(api_key=keys["admin-2"], http=http)
        for name, roles in [
            ("alice", ["data_scientist"]),
            ("bob", ["approver"]),
            ("carol", ["approver"]),
            ("olivia", ["operator"]),
            ("audrey", ["auditor"]),
            ("pat", ["predictor"]),
            ("rita", ["regulator"]),
        ]:
            ids[name] = admin.create_principal(name, [r for r in roles if r != "approver"]).id
            if "approver" in roles:
                granted(admin, second, ids[name], "approver")
            keys[name] = issued(admin, second, ids[name])
            clients[name] = LedgerClient(api_key=keys[name], http=http)
        alice = clients["alice"]
        dataset = alice.upload_dataset(
            HOSTILE_NAME, _csv(), datasheet={"motivation": HOSTILE, "protected_attributes": ["age"]}
        )
        code = alice.register_code_version("https://git.example/credit", "a1b2c3d4e5f6", entrypoint="train:main")
        run = alice.start_run(name="gbm", dataset_version_ids=[dataset.id], code_version_id=code.id, seed=3)
        alice.log_params(run.id, {"max_depth": 3})
        alice.log_metric(run.id, "auc", 0.91, 0)
        alice.upload_artifact(run.id, "model.pkl", b"model-bytes")
        alice.finish_run(run.id)
        # a client-reported run gets no fairness report: the gate (failing closed) needs no minimum ratio
        number, _ = alice.register_model_version(MODEL, run.id, "model.pkl", policy={"min_impact_ratio": None})
        for approver in ("bob", "carol"):
            signer = Signer.generate()
            key_id = clients[approver].register_signing_key(ids[approver], signer)
            clients[approver].decide(MODEL, number, signer, key_id, "approve", f"{approver} reviewed the report")
        clients["olivia"].deploy(MODEL, "champion", number, reason="first release")
        _catch_up(services)
        _serve(services, ids, number)
        _catch_up(services)
        yield World(services, app, keys, ids, run.id)


def _serve(services: Services, ids: dict[str, str], number: int) -> None:
    """Predictions with outcomes (one overridden), a drift alert and two signed reports, recorded as events."""
    ledger = services.ledger
    version = ledger.model_version(MODEL, number)
    for i in range(30):
        row = {"age": 20 + i, "income": 1000.0 * i}
        label = int(i % 3 != 0)
        prediction = Prediction.make(
            model_name=MODEL,
            model_version_id=str(version.id),
            number=number,
            role="champion",
            request_id=f"loan-{i:04d}",
            shadow_of=None,
            subject_id=None,
            input_digest="sha256:" + f"{i:064x}",
            input=row,
            input_ciphertext=None,
            input_key_id=None,
            output={"label": label, "probability": 0.4 + label / 3},
            explanation=None,
            latency_ms=2.0 + i / 10,
            reason_codes=[
                {"feature": "income", "value": row["income"], "contribution": 0.25},
                {"feature": "age", "value": row["age"], "contribution": -0.05},
            ],
            actor=ids["pat"],
        )
        ledger.save(prediction)
        ledger.record_outcome(str(prediction.id), int(i % 4 != 0), actor=ids["pat"])
    first = str(Prediction.create_id(model_name=MODEL, request_id="loan-0000"))
    ledger.override_decision(first, {"label": 1}, f"manual review {HOSTILE}", actor=ids["olivia"])
    monitor = Monitor(model_name=MODEL, actor="system:monitor")
    monitor.detect(
        model_name=MODEL,
        model_version_id=str(version.id),
        number=number,
        window={"from_position": 40, "to_position": 70, "rows": 30},
        drifted_features=["income"],
        retraining_run_id=None,
        thresholds={"psi": 0.2, "p_value": 0.01},
        statistics={
            "income": {
                "kind": "numeric",
                "psi": 0.41,
                "test": "ks",
                "statistic": 0.3,
                "p_value": 0.0004,
                "drifted": True,
            },
            "age": {"kind": "numeric", "psi": 0.03, "test": "ks", "statistic": 0.05, "p_value": 0.7, "drifted": False},
        },
        actor="system:monitor",
    )
    bar = services.blobs.put_bytes(PIXEL_PNG).digest
    explanations = Report(
        kind="explanations", model_name=MODEL, model_version_id=str(version.id), number=number, actor="system:reports"
    )
    explanations.publish(
        {
            "explainer": "tree",
            "output_space": "probability",
            "n_rows": 20,
            "base_value": 0.5,
            "background_digest": bar,
            "background_size": 20,
            "plots": {"bar": bar},
            "mean_abs_shap": [{"feature": "income", "mean_abs_shap": 0.2}, {"feature": "age", "mean_abs_shap": 0.04}],
        },
        {"bar.png": bar},
        {"run_id": "r", "validation_rows": 20},
        actor="system:reports",
    )
    truth = [i % 2 for i in range(40)]
    decided = [1 if i < 20 else i % 2 for i in range(40)]
    fairness = fairness_report(truth, decided, {"sex": ["f"] * 20 + ["m"] * 20}, positive=1)
    fairness["threshold"] = 0.8
    fairness["violations"] = impact_ratio_violations(fairness, 0.8)
    report = Report(
        kind="fairness", model_name=MODEL, model_version_id=str(version.id), number=number, actor="system:reports"
    )
    report.publish(fairness, {}, {"run_id": "r", "validation_rows": 40}, actor="system:reports")
    ledger.save(monitor, explanations, report)


def browser(world: World) -> TestClient:
    """A client with its own cookie jar (the application is already started)."""
    return TestClient(world.app, follow_redirects=False)


def login_token(http: TestClient) -> str:
    page = http.get("/console/login")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def sign_in(world: World, who: str, next_path: str = "/console") -> TestClient:
    http = browser(world)
    response = http.post(
        "/console/login", data={"api_key": world.keys[who], "csrf_token": login_token(http), "next": next_path}
    )
    assert response.status_code == 303, response.text
    return http


def csrf_of(http: TestClient, path: str = "/console/ledger") -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', http.get(path).text)
    assert found is not None
    return found.group(1)


def test_a_page_without_a_session_redirects_to_the_login_form(world: World) -> None:
    response = browser(world).get("/console/audit?model=credit-risk")

    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?next=%2Fconsole%2Faudit%3Fmodel%3Dcredit-risk"


def test_the_site_root_opens_the_console(world: World) -> None:
    assert browser(world).get("/").headers["location"] == "/console"


def test_signing_in_sets_an_opaque_strict_httponly_cookie_and_goes_on(world: World) -> None:
    http = browser(world)
    response = http.post(
        "/console/login",
        data={
            "api_key": world.keys["audrey"],
            "csrf_token": login_token(http),
            "next": "/console/audit?type=ApprovalGranted",
        },
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/console/audit?type=ApprovalGranted"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("mll_console="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert world.keys["audrey"] not in cookie
    page = http.get("/console/audit")
    assert page.status_code == 200
    assert "audrey" in page.text and "Sign out" in page.text


def test_a_bad_key_is_refused_and_opens_no_session(world: World) -> None:
    http = browser(world)
    response = http.post(
        "/console/login", data={"api_key": "mll_not-a-key-but-long-enough-to-try", "csrf_token": login_token(http)}
    )

    assert response.status_code == 401
    assert "Unknown, revoked or deactivated API key" in response.text
    assert "mll_not-a-key" not in response.text
    assert "mll_console=" not in response.headers.get("set-cookie", "")
    assert http.get("/console/audit").status_code == 303


def test_a_login_form_without_its_token_is_refused(world: World) -> None:
    http = browser(world)
    http.get("/console/login")

    response = http.post("/console/login", data={"api_key": world.keys["audrey"], "csrf_token": "forged"})

    assert response.status_code == 403
    assert http.get("/console/audit").status_code == 303


def test_login_never_redirects_off_site(world: World) -> None:
    http = browser(world)
    response = http.post(
        "/console/login",
        data={"api_key": world.keys["audrey"], "csrf_token": login_token(http), "next": "//evil.example/console"},
    )

    assert response.headers["location"] == "/console"


def test_revoking_the_key_ends_the_open_session_at_once(world: World) -> None:
    admin = LedgerClient(api_key=ADMIN_KEY, http=browser(world))
    key = issued(admin, LedgerClient(api_key=world.keys["admin-2"], http=browser(world)), world.ids["audrey"])
    world.keys["audrey-temporary"] = key
    http = sign_in(world, "audrey-temporary")
    assert http.get("/console/audit").status_code == 200

    admin.request("DELETE", f"/v1/api-keys/{world.services.ledger.api_key_of(key).id}")
    response = http.get("/console/audit")

    assert response.status_code == 303
    assert response.headers["location"].endswith("&message=revoked")
    assert "revoked" in http.get(response.headers["location"]).text


def test_a_role_without_the_permission_gets_a_403_page(world: World) -> None:
    http = sign_in(world, "olivia")

    refused = http.get("/console/audit")
    allowed = http.get(f"/console/models/{MODEL}")

    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("text/html")
    assert "this page needs one of the roles admin, auditor; you have operator" in refused.text
    assert allowed.status_code == 200
    assert 'href="/console/audit"' not in allowed.text  # the navigation bar offers only pages that open


def test_a_role_with_no_console_page_is_told_so(world: World) -> None:
    response = sign_in(world, "pat").get("/console")

    assert response.status_code == 403
    assert "no console page is open to the roles predictor" in response.text


def test_the_landing_page_is_the_first_page_a_role_opens(world: World) -> None:
    assert sign_in(world, "audrey").get("/console").headers["location"] == "/console/audit"
    assert sign_in(world, "olivia").get("/console").headers["location"] == "/console/models"
    assert sign_in(world, "rita").get("/console").headers["location"] == "/console/exports"


def test_a_form_without_the_session_csrf_token_is_refused(world: World) -> None:
    http = sign_in(world, "audrey")

    logout = http.post("/console/logout", data={"csrf_token": "wrong"})
    verify = http.post("/console/ledger/verify", data={})

    assert logout.status_code == 403 and verify.status_code == 403
    assert "did not carry this session&#39;s token" in logout.text
    assert http.get("/console/audit").status_code == 200  # still signed in


def test_signing_out_ends_the_session(world: World) -> None:
    http = sign_in(world, "audrey")
    cookie = http.cookies.get("mll_console")

    response = http.post("/console/logout", data={"csrf_token": csrf_of(http)})

    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?message=signed-out"
    stale = browser(world)
    stale.cookies.set("mll_console", cookie or "", path="/console")
    assert stale.get("/console/audit").status_code == 303


def test_the_audit_filters_are_applied(world: World) -> None:
    http = sign_in(world, "audrey")

    approvals = http.get("/console/audit", params={"type": "ApprovalGranted", "actor": "bob"})
    by_model = http.get("/console/audit", params={"model": MODEL})
    nothing = http.get("/console/audit", params={"until": "2000-01-01T00:00:00"})

    rows = re.findall(r'<a href="/console/audit\?type=([A-Za-z]+)">', approvals.text)
    assert rows == ["ApprovalGranted"]
    types = set(re.findall(r'<a href="/console/audit\?type=([A-Za-z]+)">', by_model.text))
    assert "Registered" in types and "ApprovalGranted" in types
    assert "DatasetVersion" not in by_model.text
    assert "No event matches these filters." in nothing.text


def test_privileged_changes_and_who_confirmed_them_are_on_the_console_audit_trail(world: World) -> None:
    http = sign_in(world, "audrey")

    proposed = http.get("/console/audit", params={"type": "Proposed"})
    confirmed = http.get("/console/audit", params={"type": "Confirmed"})
    proofs = http.get("/console/audit", params={"type": "SigningKeyPossessionProven"})

    assert re.findall(r'<a href="/console/audit\?type=([A-Za-z]+)">', proposed.text).count("Proposed") >= 2
    assert re.findall(r'<a href="/console/audit\?type=([A-Za-z]+)">', confirmed.text).count("Confirmed") >= 2
    assert "PrivilegedChange" in proposed.text
    assert (
        re.findall(r'<a href="/console/audit\?type=([A-Za-z]+)">', proofs.text).count("SigningKeyPossessionProven") == 2
    )


def test_the_audit_trail_pages_by_cursor(world: World) -> None:
    http = sign_in(world, "audrey")

    first = http.get("/console/audit", params={"limit": "20"})
    next_href = re.search(r'<a href="([^"]+)" rel="next">', first.text)
    assert next_href is not None
    second = http.get(next_href.group(1).replace("&amp;", "&"))

    ids_first = [int(n) for n in re.findall(r'title="inclusion proof \(JSON\)">(\d+)<', first.text)]
    ids_second = [int(n) for n in re.findall(r'title="inclusion proof \(JSON\)">(\d+)<', second.text)]
    assert len(ids_first) == 20
    assert ids_second and min(ids_second) > max(ids_first)


def test_a_bad_filter_is_explained_on_the_page(world: World) -> None:
    response = sign_in(world, "audrey").get("/console/audit", params={"since": "yesterday"})

    assert response.status_code == 422
    assert "since must be a time such as 2026-11-22T10:00:00Z" in response.text


def test_user_controlled_text_is_escaped(world: World) -> None:
    http = sign_in(world, "audrey")

    pages = [http.get(f"/console/models/{MODEL}").text, http.get("/console/audit").text]

    for text in pages:
        assert "<script>alert" not in text
        assert "<img src=x" not in text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in pages[0]
    assert "x&lt;img src=x onerror=alert(1)&gt;" in pages[0]


def test_the_model_page_shows_lineage_and_valid_signatures(world: World) -> None:
    page = sign_in(world, "audrey").get(f"/console/models/{MODEL}?version=1")

    assert page.status_code == 200
    assert '<svg class="lineage"' in page.text
    assert "run gbm" in page.text and "credit-risk v1" in page.text and "champion" in page.text
    assert page.text.count("valid Ed25519") == 2
    assert page.text.count("names this version") == 2
    assert "bob reviewed the report" in page.text


def test_a_tampered_approval_signature_shows_as_invalid(world: World) -> None:
    table = r.reg_approvals
    with world.services.engine.begin() as conn:
        first = conn.execute(
            sa.select(table.c.notification_id, table.c.signature).order_by(table.c.notification_id)
        ).first()
        assert first is not None
        forged = ("A" if first.signature[0] != "A" else "B") + first.signature[1:]
        conn.execute(table.update().where(table.c.notification_id == first.notification_id).values(signature=forged))
    try:
        page = sign_in(world, "audrey").get(f"/console/models/{MODEL}")
    finally:
        with world.services.engine.begin() as conn:
            conn.execute(
                table.update().where(table.c.notification_id == first.notification_id).values(signature=first.signature)
            )

    assert page.text.count("valid Ed25519") == 1
    assert "INVALID" in page.text


def test_an_unknown_model_is_a_404_page(world: World) -> None:
    response = sign_in(world, "audrey").get("/console/models/no-such-model")

    assert response.status_code == 404
    assert "there is no model named &#39;no-such-model&#39;" in response.text


def test_pages_load_nothing_from_elsewhere_and_run_no_script(world: World) -> None:
    http = sign_in(world, "admin")
    paths = [
        "/console/audit",
        "/console/models",
        f"/console/models/{MODEL}",
        "/console/decisions",
        "/console/decisions?request_id=loan-0001",
        "/console/exports",
        "/console/ledger",
        "/console/login",
    ]

    for path in paths:
        response = http.get(path) if path != "/console/login" else browser(world).get(path)
        assert response.status_code == 200, path
        assert "<script" not in response.text, path
        assert not re.search(r'(?:src|href|action)="(?!/[^/]|#|data:)', response.text), path
        assert not re.search(r"url\((?!#)", response.text), path
        assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "http" not in http.get("/console/static/console.css").text


def test_the_ledger_page_shows_the_checkpoint_and_verifies_the_ledger(world: World) -> None:
    http = sign_in(world, "audrey")
    before = http.get("/console/ledger")
    assert "mlledger.local/ledger" in before.text and "Root hash (hex)" in before.text

    started = http.post("/console/ledger/verify", data={"csrf_token": csrf_of(http)})
    world.app.state.console.verification.wait(120)
    after = http.get("/console/ledger")

    assert started.status_code == 303
    assert '<div class="notice ok" id="verify-result"><strong>OK</strong>' in after.text
    assert "Started" in after.text and "by audrey" in after.text


def test_a_decision_is_reconstructed_by_request_id(world: World) -> None:
    page = sign_in(world, "audrey").get("/console/decisions", params={"request_id": "loan-0000"})

    assert page.status_code == 200
    text = page.text
    assert "credit-risk v1</a> as champion" in text
    assert '<span class="badge warn">overridden</span> <span class="mono">{&#34;label&#34;: 1}</span>' in text
    assert "manual review &lt;script&gt;" in text and "<script>" not in text
    assert re.search(r'<td>income</td><td class="mono">0(\.0)?</td>', text)
    assert text.count("valid Ed25519") == 2
    assert "inclusion proof (JSON)" in text


def test_a_decision_is_found_by_prediction_id_too(world: World) -> None:
    prediction_id = str(Prediction.create_id(model_name=MODEL, request_id="loan-0007"))

    page = sign_in(world, "olivia").get("/console/decisions", params={"prediction_id": prediction_id})

    assert page.status_code == 200
    assert "loan-0007" in page.text and "not recorded yet" not in page.text


def test_an_unknown_decision_is_explained(world: World) -> None:
    page = sign_in(world, "audrey").get("/console/decisions", params={"request_id": "no-such-request"})

    assert page.status_code == 404
    assert "no prediction with id or request id &#39;no-such-request&#39;" in page.text


def test_decisions_are_closed_to_roles_that_may_not_read_them(world: World) -> None:
    assert sign_in(world, "rita").get("/console/decisions").status_code == 403


def test_the_model_page_plots_live_accuracy_and_drift(world: World) -> None:
    page = sign_in(world, "audrey").get(f"/console/models/{MODEL}", params={"window": "10"})

    assert page.status_code == 200
    assert page.text.count('<svg class="chart"') == 2
    assert 'aria-label="live accuracy of credit-risk"' in page.text
    assert '<span class="badge bad">income</span>' in page.text
    assert "income: PSI 0.410, ks p=0.0004" in page.text


def test_the_model_page_shows_the_signed_reports_with_their_plots(world: World) -> None:
    page = sign_in(world, "audrey").get(f"/console/models/{MODEL}")

    assert '<img class="plot" src="data:image/png;base64,' in page.text
    assert "tree explainer on 20 validation rows" in page.text
    assert "1 group(s) below the required impact ratio" in page.text
    assert '<span class="badge bad">0.500</span>' in page.text


def _export(http: TestClient, **fields: str | list[str]) -> str:
    response = http.post(
        f"/console/models/{MODEL}/export",
        data={"csrf_token": csrf_of(http), "predictions": "sample", "sample_size": "10", **fields},
    )
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(f"/console/models/{MODEL}?export=") and location.endswith("#export")
    return location.split("export=")[1].split("#")[0]


def test_the_export_button_builds_a_bundle_that_downloads_and_is_recorded(world: World) -> None:
    http = sign_in(world, "audrey")

    export_id = _export(http)
    shown = http.get(f"/console/models/{MODEL}", params={"export": export_id})
    bundle = http.get(f"/console/exports/{export_id}/bundle")

    assert 'id="export-result"' in shown.text and export_id in shown.text
    assert f'href="/console/exports/{export_id}/bundle"' in shown.text
    assert bundle.status_code == 200 and bundle.headers["content-type"] == "application/zip"
    digest = "sha256:" + hashlib.sha256(bundle.content).hexdigest()
    assert bundle.headers["x-bundle-digest"] == digest and digest in shown.text
    _catch_up(world.services)
    trail = http.get("/console/audit", params={"aggregate_id": export_id})
    assert "Downloaded" in trail.text


def test_an_export_needs_the_csrf_token_and_the_export_permission(world: World) -> None:
    auditor, operator = sign_in(world, "audrey"), sign_in(world, "olivia")

    forged = auditor.post(f"/console/models/{MODEL}/export", data={"csrf_token": "forged"})
    token = csrf_of(operator, "/console/models")
    refused = operator.post(f"/console/models/{MODEL}/export", data={"csrf_token": token})

    assert forged.status_code == 403 and refused.status_code == 403
    assert "Export bundles need the admin, auditor or regulator role." in operator.get(f"/console/models/{MODEL}").text


def test_a_bad_export_window_is_explained_on_the_model_page(world: World) -> None:
    http = sign_in(world, "audrey")

    response = http.post(f"/console/models/{MODEL}/export", data={"csrf_token": csrf_of(http), "since": "soon"})

    assert response.status_code == 422
    assert "The export was not built: from must be a time such as 2026-11-22T10:00:00Z" in response.text


def test_a_regulator_sees_and_downloads_only_the_bundles_shared_with_them(world: World) -> None:
    auditor = sign_in(world, "audrey")
    shared = _export(auditor, share_with=[world.ids["rita"]])
    private = _export(auditor)
    rita = sign_in(world, "rita")

    listing = rita.get("/console/exports")

    assert shared in listing.text and private not in listing.text
    assert rita.get(f"/console/exports/{shared}/bundle").status_code == 200
    assert rita.get(f"/console/exports/{private}/bundle").status_code == 403
