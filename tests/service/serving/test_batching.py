"""The batch thread under the group committer and the predict queue: what it groups, holds back and refuses."""

from __future__ import annotations

import threading

import pytest

from service.serving.batching import BatchThread, WriterStopped


class Recorder(BatchThread[int]):
    """Serves integers (weighing what they say), holding the thread on the first batch until released."""

    def __init__(self, max_weight: int, fail_on: int | None = None) -> None:
        super().__init__("test-batches", max_weight)
        self.gate, self.entered = threading.Event(), threading.Event()
        self.served: list[list[int]] = []
        self.failed: list[tuple[list[int], str]] = []
        self.fail_on = fail_on

    def put(self, item: int) -> None:
        self._put(item)

    def _weight(self, item: int) -> int:
        return item

    def _serve(self, batch: list[int]) -> None:
        self.entered.set()
        assert self.gate.wait(10)
        if self.fail_on in batch:
            raise RuntimeError(f"cannot serve {self.fail_on}")
        self.served.append(batch)

    def _fail(self, batch: list[int], error: BaseException) -> None:
        self.failed.append((batch, str(error)))


def test_what_queued_meanwhile_is_one_batch_up_to_the_weight_and_the_rest_waits_its_turn() -> None:
    recorder = Recorder(max_weight=10)
    recorder.put(1)
    assert recorder.entered.wait(10)  # the thread holds the first batch
    for item in (3, 4, 5, 2):
        recorder.put(item)
    recorder.gate.set()
    recorder.stop()

    assert recorder.served == [[1], [3, 4], [5, 2]]  # 3 + 4 + 5 would weigh 12: the 5 opens the next batch
    assert (recorder.batches, recorder.requests) == (3, 5)
    with pytest.raises(WriterStopped):
        recorder.put(1)


def test_a_batch_that_fails_unexpectedly_is_failed_as_a_whole_and_the_thread_goes_on() -> None:
    recorder = Recorder(max_weight=100, fail_on=7)
    recorder.put(1)
    assert recorder.entered.wait(10)
    recorder.put(7)
    recorder.put(8)
    recorder.gate.set()
    recorder.stop()

    assert recorder.served == [[1]]
    assert recorder.failed == [([7, 8], "cannot serve 7")]


def test_stopping_a_thread_that_never_started_is_quiet() -> None:
    recorder = Recorder(max_weight=1)
    recorder.stop()
    assert (recorder.batches, recorder.requests) == (0, 0)
    with pytest.raises(WriterStopped):
        recorder.put(1)
