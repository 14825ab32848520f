"""The web console in a real browser (headless Debian chromium driven by
Playwright) against a real server process: sign in, filter the audit trail,
open a model's lineage, look up a decision, start an export, verify the ledger.
A screenshot of every page is saved under test-artifacts/console/.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.governance_world import World, approve, make_world
from support.ledger import REPO, make_settings, settings_env
from support.serving_world import FEATURES, credit_csv, credit_rows, features_of

from mlledger.client import LedgerClientError

SHOTS = REPO / "test-artifacts" / "console"
MODEL = "credit"


def chromium() -> str:
    """The system chromium, or skip (fail under CI=true) saying why."""
    found = shutil.which("chromium")
    if found is None:
        reason = "Debian's chromium is not installed (run `make browser` as root, or apt-get install chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """``mlledger serve`` (API, projector, runner, reports and drift workers) on a fresh SQLite ledger."""
    settings = make_settings("sqlite", tmp_path / "data")
    env = settings_env(settings) | {"MLLEDGER_CHECKPOINT_EVERY_SECONDS": "0.5"}
    migrated = subprocess.run(
        [sys.executable, "-m", "service", "migrate"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _caught_up(base: str, timeout: float = 30) -> None:
    """Wait until every read model has reached the ledger's head and a checkpoint covers it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = httpx.get(f"{base}/readyz", timeout=5).json()
        checkpoint = httpx.get(f"{base}/v1/ledger/checkpoint", timeout=5)
        if (
            not any(ready["projection_lag"].values())
            and checkpoint.status_code == 200
            and checkpoint.json()["tree_size"] >= ready["position"]
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"read models did not catch up: {ready}")


def _history(base: str) -> World:
    """Through the typed client: a runner-trained credit model, approved by two signers and deployed,
    serving predictions with outcomes, a shifted batch that drifts, and its reports computed."""
    http = httpx.Client(base_url=base, timeout=120)
    world = make_world(http)  # type: ignore[arg-type]  # any httpx client will do
    world.add("pia", ["predictor"])
    alice = world.people["alice"].client
    dataset = alice.upload_dataset(
        "credit", credit_csv(), datasheet={"motivation": "credit decisions", "protected_attributes": ["sex"]}
    )
    alice.add_pipeline_spec(
        "credit-gbm",
        "sklearn",
        {
            "estimator": "sklearn.ensemble.GradientBoostingClassifier",
            "estimator_params": {"n_estimators": 30, "max_depth": 2},
            "features": FEATURES,
            "target": "approved",
            "task": "classification",
        },
    )
    run = alice.start_run(
        name="credit-1", mode="runner", pipeline="credit-gbm", dataset_version_ids=[dataset.id], seed=1
    )
    assert alice.wait_for_run(run.id, timeout=180)["status"] == "succeeded"
    number, _ = alice.register_model_version(  # approved before its reports exist: no fairness minimum
        MODEL,
        run.id,
        "model.pkl",
        input_schema=[{"name": f, "type": "number"} for f in FEATURES],
        policy={"min_impact_ratio": None},
    )
    approve(world, "bob", MODEL, number)
    approve(world, "carol", MODEL, number)
    olivia = world.people["olivia"].client
    olivia.deploy(MODEL, "champion", number, reason="first release")
    pia = world.people["pia"].client
    rows = credit_rows(60, seed=11)
    served = pia.predict_batch(
        MODEL, [{"input": features_of(r), "request_id": f"loan-{i:04d}"} for i, r in enumerate(rows)]
    )
    for answer, row in zip(served["predictions"], rows, strict=True):
        pia.record_outcome(answer["prediction_id"], row["approved"])
    shifted = credit_rows(300, seed=12, income_shift=40_000)
    position = pia.predict_batch(
        MODEL, [{"input": features_of(r), "request_id": f"shifted-{i:04d}"} for i, r in enumerate(shifted)]
    )["position"]
    deadline = time.monotonic() + 120
    while True:  # the reports (and the reference profile drift is measured against) are computed in the background
        try:
            world.people["audrey"].client.report(MODEL, number, "explanations")
            check = olivia.check_drift(MODEL, window=300, min_position=position)
            break
        except LedgerClientError:
            assert time.monotonic() < deadline, "the reports were not computed"
            time.sleep(0.5)
    assert check["alert_position"] is not None
    _caught_up(base)
    return world


def _auditor_key(world: World) -> str:
    return world.issue_key(world.people["audrey"].id, "console")


@pytest.mark.slow
def test_a_compliance_officer_uses_the_console_in_a_browser(server: str) -> None:
    executable = chromium()
    from playwright.sync_api import expect, sync_playwright

    world = _history(server)
    key = _auditor_key(world)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        blocked: list[str] = []
        page.on("request", lambda r: blocked.append(r.url) if not r.url.startswith(server) else None)
        try:
            # Sign in: an unauthenticated visit lands on the login form.
            page.goto(f"{server}/console/audit")
            expect(page).to_have_url(f"{server}/console/login?next=%2Fconsole%2Faudit")
            page.screenshot(path=SHOTS / "01-login.png", full_page=True)
            page.fill("input[name=api_key]", key)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{server}/console/audit")
            expect(page.locator("header .who")).to_contain_text("audrey")
            page.screenshot(path=SHOTS / "02-audit-trail.png", full_page=True)

            # Filter the audit trail: the approvals of the model.
            page.fill("input[name=type]", "ApprovalGranted")
            page.fill("input[name=model]", MODEL)
            page.click("form.filters button[type=submit]")
            rows = page.locator("table.timeline tbody tr")
            expect(rows).to_have_count(2)
            expect(rows.first).to_contain_text("ApprovalGranted")
            expect(rows.first).to_contain_text("bob")
            page.screenshot(path=SHOTS / "03-audit-filtered.png", full_page=True)

            # Open the model's lineage.
            page.click("header nav >> text=Models")
            page.screenshot(path=SHOTS / "04-models.png", full_page=True)
            page.click(f"table >> text={MODEL}")
            expect(page.locator("h1")).to_have_text(f"Model {MODEL}")
            page.click("#versions >> xpath=following-sibling::table[1] >> text=v1")
            lineage = page.locator("svg.lineage")
            expect(lineage).to_be_visible()
            expect(lineage).to_contain_text("run credit-1")
            expect(lineage).to_contain_text("pipeline credit-gbm v1")
            expect(lineage).to_contain_text("champion")
            expect(page.locator("#approvals + table")).to_contain_text("valid Ed25519")
            expect(page.locator("img.plot").first).to_be_visible()
            expect(page.locator("svg.chart")).to_have_count(2)
            page.screenshot(path=SHOTS / "05-model-lineage.png", full_page=True)

            # Look up a decision.
            page.click("header nav >> text=Decisions")
            page.fill("input[name=request_id]", "loan-0003")
            page.click("form.filters button[type=submit]")
            expect(page.locator("main h2")).to_contain_text("Decision ")
            expect(page.locator("main")).to_contain_text("credit v1 as champion")
            expect(page.locator("main")).to_contain_text("leaf")
            page.screenshot(path=SHOTS / "06-decision.png", full_page=True)

            # Start an export from the model page, then download the bundle.
            page.goto(f"{server}/console/models/{MODEL}#export")
            page.select_option("select[name=predictions]", "sample")
            page.fill("input[name=sample_size]", "50")
            page.click("text=Export bundle")
            result = page.locator("#export-result")
            expect(result).to_contain_text("Export recorded")
            with page.expect_download() as started:
                result.locator("text=download the bundle").click()
            bundle = started.value.path()
            digest = "sha256:" + hashlib.sha256(Path(bundle).read_bytes()).hexdigest()
            expect(result).to_contain_text(digest)
            result.scroll_into_view_if_needed()
            page.screenshot(path=SHOTS / "07-export.png", full_page=True)

            # Verify the ledger.
            page.click("header nav >> text=Ledger")
            expect(page.locator("main")).to_contain_text("Latest checkpoint")
            page.click("text=Verify ledger now")
            expect(page.locator("#verify-result")).to_contain_text("OK", timeout=120_000)
            page.screenshot(path=SHOTS / "08-ledger-verified.png", full_page=True)

            # Sign out: the session is gone.
            page.click("header button:has-text('Sign out')")
            expect(page.locator("main")).to_contain_text("You have signed out.")
            page.goto(f"{server}/console/audit")
            expect(page.locator("h1")).to_have_text("Sign in")
        finally:
            browser.close()
    assert blocked == [], f"the console loaded resources from elsewhere: {blocked}"
