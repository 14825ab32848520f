"""The web console in a real browser (headless Debian chromium driven by
Playwright) against a real server process: sign in, filter the audit trail,
open a model's lineage, look up a decision, start an export, verify the ledger.
A screenshot of every page is saved under test-artifacts/console/.
"""

from __future__ import annotations

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
from conftest import ADMIN_KEY, REPO, make_settings, settings_env
from governance_world import World, approve, make_world, train_and_register

from service.client import LedgerClient

SHOTS = REPO / "test-artifacts" / "console"
MODEL = "credit-risk"


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
    """``mlledger serve`` (projector on, no runner) on a fresh SQLite ledger."""
    settings = make_settings("sqlite", tmp_path / "data")
    env = settings_env(settings) | {"MLLEDGER_CHECKPOINT_EVERY_SECONDS": "0.5"}
    migrated = subprocess.run([sys.executable, "-m", "service", "migrate"], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120, check=False)
    assert migrated.returncode == 0, migrated.stderr
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port), "--no-runner"],
        env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
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
        if (not any(ready["projection_lag"].values()) and checkpoint.status_code == 200
                and checkpoint.json()["tree_size"] >= ready["position"]):
            return
        time.sleep(0.2)
    raise AssertionError(f"read models did not catch up: {ready}")


def _history(base: str) -> World:
    """An organisation, a model with two versions (the first approved and deployed), through the typed client."""
    http = httpx.Client(base_url=base, timeout=60)
    world = make_world(http)  # type: ignore[arg-type]  # any httpx client will do
    first = train_and_register(world, "alice", MODEL, seed=1)
    approve(world, "bob", MODEL, first)
    approve(world, "carol", MODEL, first)
    world.people["olivia"].client.deploy(MODEL, "champion", first, reason="first release")
    train_and_register(world, "alice", MODEL, seed=2)
    _caught_up(base)
    return world


def _auditor_key(world: World) -> str:
    admin = LedgerClient(api_key=ADMIN_KEY, http=world.admin.http)
    return admin.issue_api_key(world.people["audrey"].id, "console")


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
            page.click(f"table >> text={MODEL}")
            expect(page.locator("h1")).to_have_text(f"Model {MODEL}")
            page.click("#versions >> xpath=following-sibling::table[1] >> text=v1")
            lineage = page.locator("svg.lineage")
            expect(lineage).to_be_visible()
            expect(lineage).to_contain_text("run credit-risk-run")
            expect(lineage).to_contain_text("champion")
            expect(page.locator("#approvals + table")).to_contain_text("valid Ed25519")
            page.screenshot(path=SHOTS / "04-model-lineage.png", full_page=True)

            # Look up a decision.
            page.click("header nav >> text=Decisions")
            page.fill("input[name=request_id]", "loan-0001")
            page.click("form.filters button[type=submit]")
            expect(page.locator("main")).to_contain_text("not available yet")
            page.screenshot(path=SHOTS / "05-decision-lookup.png", full_page=True)

            # Start an export from the model page.
            page.goto(f"{server}/console/models/{MODEL}#export")
            expect(page.locator("#export + div")).to_contain_text("not available yet")
            page.screenshot(path=SHOTS / "06-export.png", full_page=True)

            # Verify the ledger.
            page.click("header nav >> text=Ledger")
            expect(page.locator("main")).to_contain_text("Latest checkpoint")
            page.click("text=Verify ledger now")
            expect(page.locator("#verify-result")).to_contain_text("OK", timeout=120_000)
            page.screenshot(path=SHOTS / "07-ledger-verified.png", full_page=True)

            # Sign out: the session is gone.
            page.click("header button:has-text('Sign out')")
            expect(page.locator("main")).to_contain_text("You have signed out.")
            page.goto(f"{server}/console/audit")
            expect(page.locator("h1")).to_have_text("Sign in")
        finally:
            browser.close()
    assert blocked == [], f"the console loaded resources from elsewhere: {blocked}"
