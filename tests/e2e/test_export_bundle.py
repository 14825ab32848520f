"""Export bundles end to end: a scripted history is exported through the API, a
regulator downloads it, and the bundle verifies offline; each kind of tampering
is named; the standalone verifier in a bare virtualenv gives the same verdicts;
the PDF opens and carries the model card."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pypdfium2
import pytest
from fastapi.testclient import TestClient
from support.governance_world import World, approve, make_world, train_and_register
from support.ledger import drop_schema, make_settings, require_postgres, run_cli

from domain.export import Export
from domain.monitor import Monitor
from domain.prediction import Prediction
from domain.report import Report
from domain.statistics.fairness import fairness_report
from domain.subject import Subject
from service.app import create_app
from service.bootstrap import Services, open_services
from service.exports import verify_bundle as checker
from service.exports.bundle import export_and_verify, export_bundle
from service.exports.model_card import APPENDICES, CARD_SECTIONS
from service.exports.scope import ExportRequest
from service.settings import Settings

MODEL = "credit-risk"
PREDICTIONS = 60


@dataclass
class Exported:
    """A history, its exported bundle, and who took part."""

    settings: Settings
    services: Services
    http: TestClient
    world: World
    bundle: Path
    export_id: str


def _record_history(services: Services, world: World) -> None:
    """Train, approve, deploy; then reports, predictions (some of identified subjects), an override,
    an outcome, an erasure and a drift alert, all as signed events."""
    number = train_and_register(world, "alice", MODEL)
    approve(world, "bob", MODEL, number)
    approve(world, "carol", MODEL, number)
    world.people["olivia"].client.deploy(MODEL, "champion", number, reason="go live")
    ledger = services.ledger
    version = ledger.model_version(MODEL, number)
    version_id = str(version.id)
    shap = services.blobs.put_bytes(b"<html>mean |SHAP| per feature</html>")
    explanations = Report(
        kind="explanations", model_name=MODEL, model_version_id=version_id, number=number, actor="system:reports"
    )
    explanations.publish(
        {"mean_abs_shap": {"age": 0.12, "income": 0.48}},
        {"shap_summary.html": shap.digest},
        {"rows": 200},
        actor="system:reports",
    )
    fairness = Report(
        kind="fairness", model_name=MODEL, model_version_id=version_id, number=number, actor="system:reports"
    )
    fairness.publish(
        fairness_report([1, 0, 1, 0, 1, 1], [1, 0, 0, 0, 1, 1], {"sex": ["f", "f", "f", "m", "m", "m"]}, positive=1),
        {},
        {"rows": 6},
        actor="system:reports",
    )
    ledger.save(explanations, fairness)
    for index in range(PREDICTIONS):
        subject = f"subject-{index}" if index % 10 == 0 else None
        prediction = Prediction.make(
            model_name=MODEL,
            model_version_id=version_id,
            number=number,
            role="champion",
            request_id=f"request-{index}",
            shadow_of=None,
            subject_id=subject,
            input_digest="sha256:" + f"{index:064x}",
            input=None if subject else {"age": 20 + index, "income": 1_000.0 * index},
            input_ciphertext=base64.b64encode(b"ciphertext-of-" + str(index).encode()).decode() if subject else None,
            input_key_id=f"key-{index}" if subject else None,
            output={"label": index % 2, "probability": 0.25 + index / 200},
            reason_codes=[],
            explanation=None,
            latency_ms=2.5,
            actor=world.people["alice"].id,
        )
        aggregates: list[object] = [prediction]
        if index == 3:
            prediction.override({"label": 0}, "manual review found a data error", actor=world.people["olivia"].id)
        if index == 4:
            prediction.record_outcome(1, actor="system:outcomes")
        if subject is not None:
            record = Subject(subject_id=subject, key_id=f"key-{index}", actor="system:vault")
            if index == 20:
                record.erase("erasure request under GDPR Art. 17", actor="admin")
            aggregates.append(record)
        ledger.save(*aggregates)
    monitor = Monitor(model_name=MODEL, actor="system:monitor")
    monitor.detect(
        model_name=MODEL,
        model_version_id=version_id,
        number=number,
        window={"first": 1, "last": 2},
        drifted_features=["income"],
        statistics={"income": {"psi": 0.31}},
        thresholds={"psi": 0.2},
        retraining_run_id=None,
        actor="system:monitor",
    )
    ledger.save(monitor)


def _open(backend: str, data_dir: Path) -> tuple[Settings, Services]:
    if backend == "postgres":
        require_postgres()
    settings = make_settings(backend, data_dir)
    return settings, open_services(settings, migrate=True)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    """A history exported through the API by an auditor and shared with one regulator, who downloads it."""
    root = tmp_path_factory.mktemp(f"export-{request.param}")
    settings, services = _open(request.param, root / "data")
    try:
        with TestClient(create_app(settings, run_projector=False, services=services)) as http:
            world = make_world(http)
            world.add("regina", ["regulator"])
            world.add("rex", ["regulator"])
            _record_history(services, world)
            created = world.people["audrey"].client.request(
                "POST", "/v1/exports", json={"model": MODEL, "share_with": [world.people["regina"].id]}
            )
            download = http.get(f"/v1/exports/{created['id']}/bundle", headers=world.people["regina"].client.headers)
            assert download.status_code == 200, download.text
            bundle = root / "bundle.zip"
            bundle.write_bytes(download.content)
            yield Exported(settings, services, http, world, bundle, created["id"])
    finally:
        services.close()
        if request.param == "postgres":
            drop_schema(settings.database_schema)


def _rewrite(source: Path, target: Path, change: Callable[[str, bytes], bytes | None]) -> Path:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            data = change(info.filename, old.read(info.filename))
            if data is not None:
                new.writestr(info.filename, data)
    return target


def _event_lines(edit: Callable[[list[bytes]], list[bytes]]) -> Callable[[str, bytes], bytes]:
    def change(name: str, data: bytes) -> bytes:
        return b"\n".join(edit(data[:-1].split(b"\n"))) + b"\n" if name == checker.EVENTS else data

    return change


def _first_prediction(lines: list[bytes]) -> int:
    return next(i for i, line in enumerate(lines) if b'"aggregate_type":"Prediction"' in line[:200])


def _flip_a_byte(lines: list[bytes]) -> list[bytes]:
    at = _first_prediction(lines)
    line = bytearray(lines[at])
    line[line.index(b'"request_id":"request-') + 22] ^= 0x01
    lines[at] = bytes(line)
    return lines


def _drop(lines: list[bytes]) -> list[bytes]:
    del lines[_first_prediction(lines)]
    return lines


def _swap(lines: list[bytes]) -> list[bytes]:
    at = _first_prediction(lines)
    lines[at], lines[at + 1] = lines[at + 1], lines[at]
    return lines


def _other_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


TAMPERINGS: dict[str, tuple[Callable[[str, bytes], bytes | None], str]] = {
    "one byte of an event": (_event_lines(_flip_a_byte), "the hash does not match the envelope bytes"),
    "an event dropped": (_event_lines(_drop), "which events.jsonl lacks: an event was removed"),
    "two lines swapped": (_event_lines(_swap), "not in ledger order"),
    "a report replaced": (
        lambda name, data: b"<html>a kinder model card</html>" if name == "reports/model_card.html" else data,
        "reports/model_card.html: has digest",
    ),
    "a public key replaced": (
        lambda name, data: _other_key_pem() if name.startswith("keys/ledger/") else data,
        "is not the public key the ledger keyring records",
    ),
    "the proofs truncated": (
        lambda name, data: data[: len(data) // 2] if name == checker.INCLUSION else data,
        "proofs/inclusion.json: is not valid JSON",
    ),
    "the proof lines cut off": (
        lambda name, data: data[: len(data) // 2] if name == checker.INCLUSION_LINES else data,
        "proofs/inclusion.jsonl: is empty or its last line is cut off (truncated)",
    ),
    "a proof node replaced": (
        lambda name, data: _replace_a_proof_node(data) if name == checker.INCLUSION_LINES else data,
        "the events and proof nodes hash to root",
    ),
}


def _replace_a_proof_node(data: bytes) -> bytes:
    lines = data.splitlines()
    at = next(i for i, line in enumerate(lines) if len(json.loads(line)) == 3)
    level, index, _ = json.loads(lines[at])
    lines[at] = json.dumps([level, index, hashlib.sha256(b"another subtree").hexdigest()]).encode()
    return b"\n".join(lines) + b"\n"


def _as_v1(source: Path, target: Path) -> Path:
    """The bundle in the v1 layout: the inclusion proof as one JSON document (leaves, then nodes)."""
    with zipfile.ZipFile(source) as old:
        entries = [json.loads(line) for line in old.read(checker.INCLUSION_LINES).splitlines()]

    def change(name: str, data: bytes) -> bytes | None:
        if name == checker.INCLUSION_LINES:
            return None
        if name == checker.INDEX:
            return json.dumps({**json.loads(data), "format": "mlledger.bundle.v1"}).encode()
        if name == checker.INCLUSION:
            header = json.loads(data)
            return json.dumps(
                {
                    "format": checker.INCLUSION_FORMAT_V1,
                    **{key: header[key] for key in ("hashing", "tree_size", "root_hash", "checkpoint")},
                    "leaves": [e for e in entries if len(e) == 2],
                    "nodes": sorted(e for e in entries if len(e) == 3),
                }
            ).encode()
        return data

    return _rewrite(source, target, change)


def test_the_exported_bundle_verifies(exported: Exported, capsys: pytest.CaptureFixture[str]) -> None:
    summary = checker.verify_bundle(exported.bundle, workers=1)

    assert summary.export_id == exported.export_id
    assert summary.by_type["Prediction"] == PREDICTIONS
    assert summary.by_type["Subject"] == PREDICTIONS // 10
    assert summary.approvals == 2
    assert summary.files >= 5
    assert checker.main([str(exported.bundle)]) == 0
    assert capsys.readouterr().out.startswith(f"OK: export {exported.export_id}")


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_each_tampering_fails_naming_the_problem(
    exported: Exported, tampering: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change, expected = TAMPERINGS[tampering]
    copy = _rewrite(exported.bundle, tmp_path / "tampered.zip", change)

    code = checker.main([str(copy), "--workers", "1"])

    out = capsys.readouterr().out.strip()
    assert code == 1
    assert out.startswith("FAILED: ") and "\n" not in out
    assert expected in out


def test_an_event_dropped_with_its_proof_entry_is_still_caught(exported: Exported, tmp_path: Path) -> None:
    def change(name: str, data: bytes) -> bytes:
        if name == checker.EVENTS:
            return _event_lines(_drop)(name, data)
        if name == checker.INCLUSION_LINES:
            lines = zipfile.ZipFile(exported.bundle).read(checker.EVENTS).split(b"\n")
            leaf = int(lines[_first_prediction(lines)].split(b'"leaf_index":')[1].split(b",")[0])
            entries = [json.loads(line) for line in data.splitlines()]
            return b"".join(json.dumps(e).encode() + b"\n" for e in entries if len(e) == 3 or e[0] != leaf)
        return data

    copy = _rewrite(exported.bundle, tmp_path / "tampered.zip", change)

    with pytest.raises(checker.BundleProblem, match="no event and no proof node covers leaf"):
        checker.verify_bundle(copy, workers=1)


def test_a_bundle_in_the_v1_layout_still_verifies_and_its_proof_still_binds(exported: Exported, tmp_path: Path) -> None:
    v1 = _as_v1(exported.bundle, tmp_path / "v1.zip")
    dropped = _as_v1(_rewrite(exported.bundle, tmp_path / "dropped.zip", _event_lines(_drop)), tmp_path / "d.zip")

    summary = checker.verify_bundle(v1, workers=2)

    assert summary.export_id == exported.export_id
    assert summary.events == checker.verify_bundle(exported.bundle, workers=1).events
    with pytest.raises(checker.BundleProblem, match=r"which events\.jsonl lacks: an event was removed"):
        checker.verify_bundle(dropped, workers=1)


def test_a_trust_anchor_outside_the_key_chain_is_refused(exported: Exported, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger.pem"
    stranger.write_bytes(_other_key_pem())
    ours = exported.settings.keys_dir / "public"
    anchor = next(ours.glob("*.pem"))

    assert checker.main([str(exported.bundle), "--public-key", str(anchor), "--workers", "1"]) == 0
    with pytest.raises(checker.BundleProblem, match="none of the trusted public keys"):
        checker.verify_bundle(exported.bundle, anchors=[checker._anchor(str(stranger))], workers=1)


def test_downloads_are_recorded_and_only_the_shared_regulator_sees_the_bundle(exported: Exported) -> None:
    people, http = exported.world.people, exported.http
    path = f"/v1/exports/{exported.export_id}/bundle"

    assert [e["id"] for e in people["regina"].client.request("GET", "/v1/exports")] == [exported.export_id]
    assert people["rex"].client.request("GET", "/v1/exports") == []
    assert http.get(path, headers=people["rex"].client.headers).status_code == 403
    assert http.get(path, headers=people["alice"].client.headers).status_code == 403
    listed = {e["id"]: e for e in people["audrey"].client.request("GET", "/v1/exports")}
    export: Export = exported.services.ledger.get(exported.export_id, Export)
    assert listed[exported.export_id]["downloads"] == export.downloads == 1
    assert (
        listed[exported.export_id]["bundle_digest"]
        == "sha256:" + hashlib.sha256(exported.bundle.read_bytes()).hexdigest()
    )


def test_encrypted_inputs_stay_ciphertext_and_erasures_travel(exported: Exported) -> None:
    events = [json.loads(line) for line in zipfile.ZipFile(exported.bundle).read(checker.EVENTS).splitlines()]
    made = [e["envelope"]["payload"] for e in events if e["topic"] == Prediction.Made.TOPIC]
    erased = [e for e in events if e["topic"] == Subject.Erased.TOPIC]

    for payload in made:
        assert (payload["input"] is None) == (payload["subject_id"] is not None)
    assert all(
        p["input_ciphertext"].startswith(base64.b64encode(b"ciphertext").decode()[:8]) for p in made if p["subject_id"]
    )
    assert len(erased) == 1


def test_every_event_has_the_audit_path_the_ledger_serves(exported: Exported) -> None:
    events = [json.loads(line) for line in zipfile.ZipFile(exported.bundle).read(checker.EVENTS).splitlines()]
    position = next(e["position"] for e in events if e["topic"] == Prediction.Made.TOPIC)

    ours = checker.audit_path(exported.bundle, position, workers=1)
    served = exported.http.get(
        "/v1/ledger/proofs/inclusion", params={"notification_id": position, "tree_size": ours["tree_size"]}
    ).json()

    assert ours["verified"]
    assert ours["audit_path"] == served["proof"]
    assert ours["root_hash"] == served["root_hash"]


def test_the_pdf_opens_and_holds_the_model_card(exported: Exported) -> None:
    archive = zipfile.ZipFile(exported.bundle)
    pdf = pypdfium2.PdfDocument(archive.read("reports/model_card.pdf"))
    text = ""
    try:
        for page in pdf:
            image = page.render(scale=0.5).to_pil()
            png = io.BytesIO()
            image.save(png, format="PNG")
            assert image.width > 100 and png.tell() > 1000
            text += page.get_textpage().get_text_range()
            page.close()
    finally:
        pdf.close()
    html = archive.read("reports/model_card.html").decode()
    squeezed = "".join(text.split())  # table cells wrap anywhere

    for title in (*CARD_SECTIONS, *APPENDICES):
        assert title in text, title
        assert f"<h2>{title}</h2>" in html, title
    assert "data:image/png;base64," in html
    for recorded in ("manual review found a data error", "erasure request under GDPR Art. 17", "impact ratio"):
        assert "".join(recorded.split()) in squeezed, recorded


def test_sections_with_nothing_recorded_say_so(tmp_path: Path) -> None:
    settings, services = _open("sqlite", tmp_path / "data")
    try:
        with TestClient(create_app(settings, run_projector=False, services=services)) as http:
            world = make_world(http)
            train_and_register(world, "alice", MODEL)
        result = export_bundle(
            services, ExportRequest.of(MODEL, predictions="none"), actor="auditor", destination=tmp_path / "bundle.zip"
        )
    finally:
        services.close()
    summary = checker.verify_bundle(result.path, workers=1)
    html = zipfile.ZipFile(result.path).read("reports/model_card.html").decode()
    quantitative = html.split("<h2>Quantitative analyses</h2>")[1].split("<h2>")[0]

    assert "Prediction" not in summary.by_type
    assert "Not recorded in the ledger." in quantitative
    assert "Not recorded in the ledger." in html.split("<h2>Approvals and signed statements</h2>")[1]


def test_a_sample_keeps_every_overridden_prediction(exported: Exported, tmp_path: Path) -> None:
    request = ExportRequest.of(MODEL, predictions="sample", sample_size=5)

    result = export_bundle(exported.services, request, actor="auditor", destination=tmp_path / "sample.zip")

    summary = checker.verify_bundle(result.path, workers=1)
    events = zipfile.ZipFile(result.path).read(checker.EVENTS)
    assert summary.by_type["Prediction"] == 6
    assert Prediction.Overridden.TOPIC.encode() in events


def test_the_window_limits_the_predictions(exported: Exported, tmp_path: Path) -> None:
    events = [json.loads(line) for line in zipfile.ZipFile(exported.bundle).read(checker.EVENTS).splitlines()]
    times = sorted(e["envelope"]["recorded_at"] for e in events if e["topic"] == Prediction.Made.TOPIC)

    result = export_bundle(
        exported.services,
        ExportRequest.of(MODEL, since=times[10], until=times[19]),
        actor="auditor",
        destination=tmp_path / "window.zip",
    )

    assert checker.verify_bundle(result.path, workers=1).by_type["Prediction"] == 10


def test_the_cli_exports_and_verifies(exported: Exported, tmp_path: Path) -> None:
    if exported.settings.is_postgres:
        pytest.skip("the CLI path is the same on both databases; once is enough")
    out = tmp_path / "cli.zip"

    made = run_cli(exported.settings, "export", "--model", MODEL, "--out", str(out), "--predictions", "none")
    good = run_cli(exported.settings, "verify-bundle", str(out))
    bad = run_cli(
        exported.settings, "verify-bundle", str(_rewrite(out, tmp_path / "bad.zip", TAMPERINGS["a report replaced"][0]))
    )

    assert made.returncode == 0, made.stderr
    assert good.returncode == 0 and good.stdout.startswith("OK: export"), good.stdout + good.stderr
    assert bad.returncode == 1 and bad.stdout.startswith("FAILED: reports/model_card.html")
    assert "Traceback" not in bad.stderr


def _fresh_venv(root: Path) -> Path:
    constraint = next(
        line
        for line in (Path(__file__).parents[2] / "constraints.txt").read_text().splitlines()
        if line.startswith("cryptography==")
    )
    python = "python3.11" if shutil.which("python3.11") else sys.executable
    subprocess.run([python, "-m", "venv", str(root)], check=True, capture_output=True, timeout=120)
    installed = subprocess.run(
        [str(root / "bin" / "pip"), "install", "--quiet", constraint], capture_output=True, text=True, timeout=300
    )
    if installed.returncode != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"pip could not install {constraint}: {installed.stderr[-500:]}")
        pytest.skip(f"pip could not install {constraint} (no package index?): {installed.stderr.strip()[-200:]}")
    return root / "bin" / "python"


@pytest.mark.slow
def test_the_standalone_verifier_in_a_bare_virtualenv_gives_the_same_verdicts(
    exported: Exported, tmp_path: Path
) -> None:
    if exported.settings.is_postgres:
        pytest.skip("the verifier reads only the bundle; once is enough")
    python = _fresh_venv(tmp_path / "venv")
    alone = tmp_path / "alone"
    alone.mkdir()
    script = alone / "verify_bundle.py"
    script.write_bytes(zipfile.ZipFile(exported.bundle).read(checker.VERIFIER))
    bundles = [exported.bundle] + [
        _rewrite(exported.bundle, tmp_path / f"{i}.zip", TAMPERINGS[name][0])
        for i, name in enumerate(("one byte of an event", "a public key replaced"))
    ]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True)
    assert {line.split("==")[0].lower() for line in listed.stdout.split()} <= {
        "cryptography",
        "cffi",
        "pycparser",
        "pip",
        "setuptools",
    }

    verdicts = []
    for bundle in bundles:
        standalone = subprocess.run(
            [str(python), str(script), str(bundle)],
            capture_output=True,
            text=True,
            cwd=alone,
            env={"PATH": os.environ["PATH"]},
            timeout=120,
        )
        ours = run_cli(exported.settings, "verify-bundle", str(bundle))
        assert standalone.returncode == ours.returncode, standalone.stderr
        assert standalone.stdout.splitlines()[0] == ours.stdout.splitlines()[0]
        verdicts.append(ours.returncode)
    assert verdicts == [0, 1, 1]


def test_extract_writes_the_verified_files_under_the_target_only(exported: Exported, tmp_path: Path) -> None:
    target = tmp_path / "out"

    code = checker.main([str(exported.bundle), "--workers", "1", "--extract", str(target)])

    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert code == 0
    assert written == {Path("out") / n for n in zipfile.ZipFile(exported.bundle).namelist()}
    assert (target / "reports" / "model_card.pdf").read_bytes().startswith(b"%PDF")


def test_the_demo_step_exports_and_verifies(exported: Exported, tmp_path: Path) -> None:
    said: list[str] = []

    summary = export_and_verify(exported.services, MODEL, tmp_path / "demo.zip", say=said.append)

    assert summary.model == MODEL and summary.by_type["Prediction"] == PREDICTIONS
    assert said[0].startswith(f"exported {summary.events} events of {MODEL}")
    assert said[1].strip().startswith("OK: export")
