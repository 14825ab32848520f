"""Runner processes beside one ledger API (PostgreSQL): they reach the ledger only over HTTP, every
run is executed exactly once, and a runner killed mid-run leaves an abandoned run, not a broken ledger."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from support.runner_http import RunnerPrincipal, start_runner
from support.runner_world import code_archive, dataset, python_pipeline, request, sklearn_pipeline, wait_finished

from domain.run import Run
from service.bootstrap import Services
from service.ops.projector import publish_checkpoint_if_due
from service.ops.verify import verify_ledger

RUNS = 40
RUNNERS = 4


def _start_runners(
    api: tuple[str, RunnerPrincipal], tmp_path: Path, count: int, concurrency: int = 2
) -> list[subprocess.Popen[bytes]]:
    url, principal = api
    return [
        start_runner(
            url,
            principal,
            tmp_path / f"runner-{index}.pem",
            tmp_path / f"runner-{index}.log",
            "--concurrency",
            str(concurrency),
        )
        for index in range(count)
    ]


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        process.wait(timeout=60)


def _serving(log: Path, starts: int = 1, timeout: float = 120) -> float:
    """When the ``starts``-th runner writing ``log`` announced it serves (its first line), on the monotonic clock."""
    deadline = time.monotonic() + timeout
    while (log.read_text() if log.exists() else "").count(" backend") < starts:
        assert time.monotonic() < deadline, f"the runner never started: {log.read_text() if log.exists() else ''}"
        time.sleep(0.05)
    return time.monotonic()


def _verify(services: Services) -> None:
    services.runner.catch_up()
    publish_checkpoint_if_due(services, force=True)
    report = verify_ledger(services.settings, [], workers=2)
    assert report.ok, [f.describe() for f in report.findings]


def test_four_runners_execute_forty_runs_each_exactly_once(
    pg_services: Services, api: tuple[str, RunnerPrincipal], tmp_path: Path
) -> None:
    data = dataset(pg_services)
    pipeline = sklearn_pipeline(pg_services)
    run_ids = [request(pg_services, pipeline, data, seed=i) for i in range(RUNS)]
    runners = _start_runners(api, tmp_path, RUNNERS)
    try:
        runs = wait_finished(pg_services, run_ids, timeout=240)
    finally:
        _stop(runners)

    claims = {run.id: [e for e in pg_services.ledger.events.get(run.id) if isinstance(e, Run.Claimed)] for run in runs}
    assert [run.status for run in runs] == ["succeeded"] * RUNS
    assert all(len(found) == 1 for found in claims.values())
    assert len({found[0].runner_id for found in claims.values()}) > 1, "the work was shared"
    attested = [
        next(e for e in pg_services.ledger.events.get(run.id) if isinstance(e, Run.ExecutionAttested)) for run in runs
    ]
    assert {event.principal_id for event in attested} == {api[1].id}
    assert all(
        event.statement["runner_id"] == claims[run.id][0].runner_id for event, run in zip(attested, runs, strict=True)
    )
    _verify(pg_services)


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (its workers, and the entrypoint processes they run)."""
    found: set[int] = set()
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            direct = {int(child) for child in children.read_text().split()}
        except OSError:
            continue
        for child in direct:
            found |= {child} | _descendants(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


SLOW = "import time\ndef main(request):\n    time.sleep(120)\n    return {'metrics': {}}\n"


def test_a_runner_killed_mid_run_leaves_it_abandoned_within_the_timeout(
    pg_services: Services, api: tuple[str, RunnerPrincipal], tmp_path: Path
) -> None:
    data = dataset(pg_services)
    code = code_archive(pg_services, SLOW)
    run_id = request(pg_services, python_pipeline(pg_services, "slow", "train:main", 600), data, code_version_id=code)
    (doomed,) = _start_runners(api, tmp_path, 1, concurrency=1)
    survivors: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + 60
        while pg_services.ledger.get(run_id, Run).status != "running":
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.1)
        below = _descendants(doomed.pid)
        assert below, "the runner executes its run in a process of its own"
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=30)
        killed_at = time.monotonic()
        while any(_alive(pid) for pid in below):
            assert time.monotonic() - killed_at < 10, "a worker outlived its SIGKILLed runner"
            time.sleep(0.1)
        survivors = _start_runners(api, tmp_path, 1)
        ready_at = _serving(tmp_path / "runner-0.log", starts=2)  # the doomed runner wrote there first
        (run,) = wait_finished(pg_services, [run_id], timeout=60)
        # The run is due once its heartbeat is 4 s old and a live runner sweeps; a survivor's
        # start-up (imports) is not the ledger's reaction time, so count from when both hold.
        noticed_after = time.monotonic() - max(killed_at + 4, ready_at)
    finally:
        _stop(survivors)

    abandoned = next(e for e in pg_services.ledger.events.get(run.id) if isinstance(e, Run.Abandoned))
    assert run.status == "abandoned"
    assert "no heartbeat" in abandoned.reason
    assert noticed_after < 10  # a sweep interval, with room for a loaded machine
    retry = pg_services.ledger.request_again(run_id, "alice", reproduce=False).id
    assert pg_services.ledger.get(retry, Run).status == "requested"
    _verify(pg_services)
