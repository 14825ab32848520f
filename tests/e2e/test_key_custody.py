"""Key custody: a runner executes runs with no ledger key, no subject key-encryption key and no database
credentials within its reach, and the pipeline code it runs cannot read them either, on both backends.

The runner process is started where the ledger's data directory is not mounted (its own mount
namespace, as the compose runner has no key volume), with none of the service's settings in its
environment; on the Ray backend, the cluster too runs without the ledger's volume. The runner claims,
executes and records runs through the API all the same, and what the pipeline code tried is recorded
by the runner's signed statement.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.ray_cluster import remove_cluster, start_cluster
from support.runner_http import RunnerPrincipal, ledger_api, runner_principal, start_runner, with_signal
from support.runner_world import code_archive, dataset, python_pipeline, request, sklearn_pipeline, wait_finished

from domain.run import Run
from service.bootstrap import Services
from service.ops.projector import publish_checkpoint_if_due
from service.ops.verify import verify_ledger

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PROBE = """
import os

def _readable(path):
    try:
        with open(path, "rb") as handle:
            handle.read(1)
        return 1.0
    except OSError:
        return 0.0

def main(request):
    keys = request["params"]["keys_dir"]
    with open(os.path.join(request["output_dir"], "model.bin"), "wb") as handle:
        handle.write(b"probe")
    return {"model_file": "model.bin", "metrics": {
        "ledger_key_readable": _readable(os.path.join(keys, "ledger.pem")),
        "kek_readable": _readable(os.path.join(keys, "subject-kek.bin")),
        "token_secret_readable": _readable(os.path.join(keys, "run-token.key")),
        "database_url_in_env": float(any("DATABASE" in name for name in os.environ)),
        "runner_api_key_in_env": float("MLLEDGER_RUNNER_API_KEY" in os.environ),
    }}
"""


def _hidden(data_dir: Path) -> list[str]:
    """A command prefix that runs a process in a mount namespace of its own where ``data_dir`` is empty."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.skip("bubblewrap is not installed (make test installs it as root)")
    return [bwrap, "--dev-bind", "/", "/", "--tmpfs", str(data_dir.resolve()), "--die-with-parent", "--"]


@pytest.fixture(params=["local", "ray"])
def backend_args(request: pytest.FixtureRequest, pg_services: Services) -> Iterator[list[str]]:
    """The runner's backend arguments; for Ray, a cluster of its own that does not see the ledger's data."""
    if request.param == "local":
        yield []
        return
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")
    cluster = start_cluster(num_cpus=2, hidden=(pg_services.settings.data_dir,))
    previous = os.environ.get("RAY_AUTH_TOKEN")
    os.environ["RAY_AUTH_TOKEN"] = cluster.token
    try:
        yield ["--backend", "ray", "--ray-address", cluster.address.removeprefix("http://")]
    finally:
        if previous is None:
            os.environ.pop("RAY_AUTH_TOKEN", None)
        else:
            os.environ["RAY_AUTH_TOKEN"] = previous
        remove_cluster(cluster)


def test_a_runner_without_keys_or_database_credentials_executes_and_records_runs(
    pg_services: Services, backend_args: list[str], tmp_path: Path
) -> None:
    keys_dir = pg_services.settings.keys_dir.resolve()
    data = dataset(pg_services)
    trained = request(pg_services, sklearn_pipeline(pg_services), data)
    probe = request(
        pg_services,
        python_pipeline(pg_services, "probe", "train:main"),
        data,
        code_version_id=code_archive(pg_services, PROBE),
        params={"keys_dir": str(keys_dir)},
    )
    with ledger_api(pg_services, tmp_path / "api.log") as url:
        principal: RunnerPrincipal = runner_principal(pg_services)
        runner = start_runner(
            url,
            principal,
            tmp_path / "runner" / "key.pem",
            tmp_path / "runner.log",
            "--work-dir",
            str(tmp_path / "runner" / "work"),
            *backend_args,
            preexec=_hidden(pg_services.settings.data_dir),
        )
        try:
            deadline = time.monotonic() + 60
            while not list((tmp_path / "runner").glob("key.pem")):
                assert runner.poll() is None, (tmp_path / "runner.log").read_text()
                assert time.monotonic() < deadline
                time.sleep(0.1)
            runs = wait_finished(pg_services, [trained, probe], timeout=180)
            seen_by_runner = _runner_view(runner, keys_dir)
        finally:
            with_signal(runner, 15)

    finished = [next(e for e in pg_services.ledger.events.get(r.id) if isinstance(e, Run.Finished)) for r in runs]
    assert [run.status for run in runs] == ["succeeded", "succeeded"], [f.error for f in finished]
    for secret in ("ledger.pem", "subject-kek.bin", "run-token.key"):  # they exist, outside the runner's reach
        assert (keys_dir / secret).is_file(), secret
    assert seen_by_runner == {"key": False, "kek": False, "environment": []}
    probed = _final_metrics(pg_services, probe)
    assert probed == {
        "ledger_key_readable": 0.0,
        "kek_readable": 0.0,
        "token_secret_readable": 0.0,
        "database_url_in_env": 0.0,
        "runner_api_key_in_env": 0.0,
    }
    for run in runs:
        attested = next(e for e in pg_services.ledger.events.get(run.id) if isinstance(e, Run.ExecutionAttested))
        assert attested.principal_id == principal.id
    pg_services.runner.catch_up()
    publish_checkpoint_if_due(pg_services, force=True)
    report = verify_ledger(pg_services.settings, [], workers=1)
    assert report.ok, [finding.describe() for finding in report.findings]


def _runner_view(runner: subprocess.Popen[bytes], keys_dir: Path) -> dict[str, object]:
    """What the runner process itself can reach: the key files through its own mount namespace, and the
    service settings in its environment."""
    pid = _runner_pid(runner.pid)
    root = Path(f"/proc/{pid}/root")
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    secret_settings = [
        entry.decode().split("=", 1)[0]
        for entry in environ
        if entry.startswith((b"MLLEDGER_DATABASE", b"MLLEDGER_DATA_DIR", b"MLLEDGER_KEY", b"MLLEDGER_ADMIN"))
    ]
    return {
        "key": (root / keys_dir.relative_to("/") / "ledger.pem").exists(),
        "kek": (root / keys_dir.relative_to("/") / "subject-kek.bin").exists(),
        "environment": secret_settings,
    }


def _runner_pid(outer: int) -> int:
    """The runner's own pid (below bubblewrap)."""
    for _ in range(50):
        for children in Path(f"/proc/{outer}/task").glob("*/children"):
            for child in children.read_text().split():
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                if b"runner" in cmdline:
                    return int(child)
                grand = _runner_pid_below(int(child))
                if grand:
                    return grand
        time.sleep(0.1)
    raise AssertionError("no runner process found")


def _runner_pid_below(pid: int) -> int | None:
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            if b"service" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
    return None


def _final_metrics(services: Services, run_id: str) -> dict[str, float]:
    points: dict[str, float] = {}
    for event in services.ledger.events.get(services.ledger.get(run_id, Run).id):
        if isinstance(event, Run.MetricsLogged):
            for point in event.metrics:
                points[point["key"]] = point["value"]
    return points
