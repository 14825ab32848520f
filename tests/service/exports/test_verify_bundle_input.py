"""Hostile or broken bundles: the verifier refuses them from the zip directory alone,
with one clear line and exit code 1, and writes nothing anywhere."""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pytest
from support.ledger import make_settings, run_cli

from service.exports import verify_bundle as checker


def _zip(path: Path, members: Iterable[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name on purpose here
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return path


def _layout() -> list[tuple[str | zipfile.ZipInfo, bytes]]:
    """Members with the bundle's names (their contents are not a valid bundle)."""
    return [
        (checker.INDEX, json.dumps({"format": checker.FORMAT}).encode()),
        (checker.EVENTS, b"{}\n"),
        (checker.INCLUSION, b"{}"),
        (checker.CONSISTENCY, b"{}"),
        (checker.KEYRING_LINES, b""),
    ]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def _fails(bundle: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = checker.main([str(bundle), *args])
    out = capsys.readouterr().out.strip()
    assert code == 1
    assert out.startswith("FAILED: ") and "\n" not in out
    return out


def test_a_file_that_is_not_a_zip_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "bundle.zip"
    bundle.write_bytes(b"PK\x03\x04 this is not really an archive" * 10)

    assert "is not a readable zip archive" in _fails(bundle, capsys)


def test_a_truncated_zip_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = _zip(tmp_path / "whole.zip", [*_layout(), ("reports/model_card.html", b"<html>" * 5000)])
    cut = tmp_path / "bundle.zip"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])

    assert "malformed or truncated" in _fails(cut, capsys)


def test_a_zip_bomb_is_refused_before_decompressing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bomb = _zip(tmp_path / "bundle.zip", [*_layout()[:1], (checker.EVENTS, bytes(64 * 1024 * 1024)), *_layout()[2:]])

    out = _fails(bomb, capsys)

    assert "a zip bomb" in out and "events.jsonl" in out


@pytest.mark.parametrize(
    "name", ["../evil.txt", "reports/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt", "reports\\..\\evil.txt"]
)
def test_path_traversal_and_absolute_names_are_refused_and_nothing_is_written(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _zip(tmp_path / "bundle.zip", [*_layout(), (name, b"gotcha")])
    target = tmp_path / "target"
    before = _files(tmp_path)

    out = _fails(bundle, capsys, "--extract", str(target))

    assert "refused" in out
    assert _files(tmp_path) == before
    assert not Path("/tmp/evil.txt").exists() or Path("/tmp/evil.txt").read_bytes() != b"gotcha"


def test_links_duplicates_and_foreign_members_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    link = zipfile.ZipInfo("reports/model_card.html")
    link.external_attr = 0o120777 << 16
    cases = {
        "symbolic link": [*_layout(), (link, b"/etc/passwd")],
        "occurs twice": [*_layout(), (checker.EVENTS, b"{}\n")],
        "not part of the bundle layout": [*_layout(), ("notes/todo.txt", b"hello")],
    }
    for expected, members in cases.items():
        bundle = _zip(tmp_path / f"{len(expected)}.zip", members)

        assert expected in _fails(bundle, capsys), expected


def test_a_bundle_over_the_size_limit_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = _zip(tmp_path / "bundle.zip", _layout())

    assert "over the limit of 100 bytes" in _fails(bundle, capsys, "--max-bytes", "100")


def test_a_missing_bundle_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "cannot be read" in _fails(tmp_path / "absent.zip", capsys)


def test_the_cli_answers_bad_input_in_one_line_with_exit_code_1(tmp_path: Path) -> None:
    bundle = _zip(tmp_path / "bundle.zip", [*_layout(), ("../evil.txt", b"gotcha")])
    settings = make_settings("sqlite", tmp_path / "data")

    refused = run_cli(settings, "verify-bundle", str(bundle), "--extract", str(tmp_path / "target"))
    too_big = run_cli(settings, "verify-bundle", str(bundle), "--max-bytes", "10")

    assert refused.returncode == 1 and too_big.returncode == 1
    assert refused.stdout.startswith("FAILED: bundle.zip member '../evil.txt': refused")
    assert too_big.stdout.count("\n") == 1 and "over the limit of 10 bytes" in too_big.stdout
    assert "Traceback" not in refused.stderr + too_big.stderr
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "target").exists()
