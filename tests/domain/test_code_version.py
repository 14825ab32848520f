"""The CodeVersion aggregate: what it records and what it refuses (no database)."""

from __future__ import annotations

import pytest

from domain.code import CodeVersion
from domain.errors import InvalidPayload

ALICE = "user:alice"
DIGEST = "sha256:" + "ab" * 32


def test_a_registered_code_version_records_where_the_code_is() -> None:
    code = CodeVersion(
        repository="https://example.org/credit.git",
        commit="a1b2c3d",
        archive_digest=DIGEST,
        entrypoint="train.main:run",
        actor=ALICE,
    )

    assert (code.repository, code.commit, code.archive_digest, code.entrypoint) == (
        "https://example.org/credit.git",
        "a1b2c3d",
        DIGEST,
        "train.main:run",
    )


def test_a_code_version_needs_no_archive_or_entrypoint() -> None:
    CodeVersion.check_registration("https://example.org/credit.git", "a1b2c3d", None, None)


@pytest.mark.parametrize(
    ("repository", "commit", "archive_digest", "entrypoint", "field"),
    [
        pytest.param("", "a1b2c3d", None, None, "repository", id="empty-repository"),
        pytest.param("   ", "a1b2c3d", None, None, "repository", id="blank-repository"),
        pytest.param("r" * 501, "a1b2c3d", None, None, "repository", id="repository-too-long"),
        pytest.param("repo", "a1b2c3", None, None, "commit", id="commit-too-short"),
        pytest.param("repo", "A1B2C3D", None, None, "commit", id="commit-uppercase"),
        pytest.param("repo", "a1b2c3d", "sha1:abc", None, "archive_digest", id="not-sha256"),
        pytest.param("repo", "a1b2c3d", None, "train main", "entrypoint", id="bad-entrypoint"),
    ],
)
def test_an_invalid_registration_is_refused_naming_the_field(
    repository: str, commit: str, archive_digest: str | None, entrypoint: str | None, field: str
) -> None:
    with pytest.raises(InvalidPayload) as caught:
        CodeVersion.check_registration(repository, commit, archive_digest, entrypoint)

    assert caught.value.field == field
