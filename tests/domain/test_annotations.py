"""Tags and descriptions: checked before anything is recorded, recorded only when they change."""

from __future__ import annotations

from typing import Any

import pytest

from domain.annotations import check_description, check_tags
from domain.dataset import DatasetVersion
from domain.errors import InvalidPayload, RunDeleted
from domain.run import Run

DIGEST = "sha256:" + "ab" * 32


def _dataset() -> DatasetVersion:
    return DatasetVersion(
        name="credit",
        number=1,
        digest=DIGEST,
        size=10,
        format="csv",
        schema=[],
        row_count=1,
        profile=[],
        datasheet={},
        source="upload",
        actor="alice",
    )


def _run() -> Run:
    return Run(
        name="r",
        mode="client",
        pipeline_id=None,
        pipeline_version=None,
        spec_digest=None,
        dataset_version_ids=[],
        code_version_id=None,
        params={},
        seed=0,
        device="auto",
        reproduces=None,
        actor="alice",
    )


@pytest.mark.parametrize("tags", [{}, {"": "x"}, {"k": 3}, {"k" * 251: "x"}, {f"k{i}": "v" for i in range(101)}, []])
def test_bad_tags_are_refused_naming_the_field(tags: Any) -> None:
    with pytest.raises(InvalidPayload) as caught:
        check_tags(tags)

    assert caught.value.field == "tags"


def test_a_description_is_a_bounded_string() -> None:
    assert check_description("") == ""
    with pytest.raises(InvalidPayload):
        check_description("x" * 20_001)
    with pytest.raises(InvalidPayload):
        check_description(None)


def test_a_dataset_version_records_only_tags_that_change() -> None:
    dataset = _dataset()
    dataset.set_tags({"source": "bureau"}, actor="alice")
    dataset.set_tags({"source": "bureau"}, actor="alice")
    dataset.set_tags({"source": "bureau", "year": "2026"}, actor="alice")

    tagged = [e for e in dataset.collect_events() if isinstance(e, DatasetVersion.TagsSet)]

    assert [e.tags for e in tagged] == [{"source": "bureau"}, {"year": "2026"}]
    assert dataset.tags == {"source": "bureau", "year": "2026"}


def test_a_deprecated_dataset_version_can_still_be_described() -> None:
    dataset = _dataset()
    dataset.deprecate("superseded", actor="alice")

    dataset.describe("the 2026 applications", actor="alice")

    assert dataset.description == "the 2026 applications"


def test_a_finished_run_can_be_described_but_a_deleted_one_cannot() -> None:
    run = _run()
    run.finish("succeeded", None, actor="alice")
    run.describe("first try", actor="alice")
    run.describe("first try", actor="alice")
    run.delete(actor="alice")

    with pytest.raises(RunDeleted):
        run.describe("second thoughts", actor="alice")
    described = [e for e in run.collect_events() if isinstance(e, Run.DescriptionSet)]
    assert [e.description for e in described] == ["first try"]
