"""Commands that do not depend on the state their caller saw are run again on fresh state after a lost
race, and take turns per record inside one process."""

from __future__ import annotations

import threading
import time

import pytest

from domain.errors import VersionConflict
from service.application import ledger_core
from service.application.ledger_core import CONFLICT_ATTEMPTS, retried_on_conflict


class Commands:
    def __init__(self, conflicts: int) -> None:
        self.conflicts = conflicts
        self.calls = 0
        self.inside = 0
        self.most_inside = 0

    @retried_on_conflict
    def log(self, run_id: str, value: int) -> int:
        self.calls += 1
        if self.calls <= self.conflicts:
            raise VersionConflict(f"run {run_id} was changed by another writer")
        return value

    @retried_on_conflict
    def meet(self, run_id: str, barrier: threading.Barrier) -> None:
        self.calls += 1
        barrier.wait()

    @retried_on_conflict
    def slow(self, run_id: str, seconds: float) -> None:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        time.sleep(seconds)
        self.inside -= 1


def test_a_command_that_lost_races_is_run_again_until_it_lands() -> None:
    commands = Commands(conflicts=3)
    assert commands.log("r1", value=7) == 7
    assert commands.calls == 4


def test_a_command_that_keeps_losing_gives_the_conflict_back_after_the_last_attempt() -> None:
    commands = Commands(conflicts=1_000)
    with pytest.raises(VersionConflict, match="changed by another writer"):
        commands.log("r1", 7)
    assert commands.calls == CONFLICT_ATTEMPTS


def test_commands_on_one_record_take_turns_and_others_do_not_wait() -> None:
    assert ledger_core.stripe_of("run-a") is not ledger_core.stripe_of("run-b")
    same = Commands(conflicts=0)
    threads = [threading.Thread(target=same.slow, args=("run-a", 0.05)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert same.most_inside == 1  # one at a time on one record

    both_inside = threading.Barrier(2, timeout=10)  # broken unless both commands run at once
    other = Commands(conflicts=0)
    pair = [threading.Thread(target=other.meet, args=(run, both_inside)) for run in ("run-a", "run-b")]
    for thread in pair:
        thread.start()
    for thread in pair:
        thread.join(15)
    assert other.calls == 2 and not both_inside.broken  # two records: side by side
