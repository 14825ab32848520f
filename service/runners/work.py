"""What a runner hands an execution backend, and what the backend hands back.

A runner claims a run from the ledger service and receives a :class:`WorkOrder`:
everything the run needs, named by digest (never by a path on the service's
disk), and a run token that lets whoever executes it, on any node, download
exactly that run's inputs and upload its outputs, and nothing else, while the
run is active. A backend (``local``: the runner's pre-forked workers; ``ray``:
a Ray job per run) turns a work order into an :class:`Execution`, which the
runner polls until it yields an :class:`Outcome`. Outputs are uploaded by
digest before the outcome is reported, so the runner records only digests, in
the execution statement it signs.

The runner HTTP API (``service/api/routers/runner.py``), all under
``/v1/runner``; callers present the API key of a principal with the ``runner``
role, or (where marked) the run token in ``X-Run-Token``:

- ``GET requested?after=CURSOR`` -> ``{"runs": [{"run_id", "device", "seed"}], "cursor"}``
- ``POST claims`` ``{"run_id", "runner_id", "host", "device", "device_note", "backend",
  "environment"}`` -> a work order (``WorkOrder.to_json()``), or 409 when another runner holds the run
- ``POST claims:first`` ``{"run_ids", ...}`` (the rest as for ``claims``) -> ``{"order", "passed_over"}``: the
  first of ``run_ids`` still requested is claimed (the environment's ``seed`` set to that run's; ``order``
  null when none was), and the candidates found taken are named, so the runner drops them
- ``GET runs/{id}/inputs/{digest}`` (run token) -> the bytes of one of the run's inputs
- ``PUT runs/{id}/outputs?name=NAME`` (run token) raw body -> 201 ``{"digest", "size"}``
- ``PUT runs/{id}/outputs:batch?name=A&size=N1&name=B&size=N2...`` (run token) the files one after another -> 201
  ``{"outputs": [{"digest", "size"}, ...]}``; none is stored unless the body holds exactly those bytes
- ``POST runs/{id}/metrics`` (run token) ``{"points"}``: progress
- ``POST heartbeats`` ``{"runner_id", "run_ids"}`` -> ``{"ended": [...]}`` (runs to stop: cancelled)
- ``POST attachments`` ``{"runner_id", "backend"}`` -> ``{"orders": [...]}``: runs whose runner went
  silent, now held by the caller, with the same run token as before
- ``POST sweeps`` -> ``{"abandoned": [...]}``
- ``POST runs/{id}/result`` ``{"statement", "signature", "metrics", "node_environment"}``: the signed
  execution statement; 422 when it does not verify, and then nothing is recorded
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Input:
    """One input of a run: a dataset version's file or the code archive, named by digest."""

    role: str  # "dataset" or "code"
    name: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        """The input as JSON values."""
        return {"role": self.role, "name": self.name, "digest": self.digest, "size": self.size}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Input:
        """Rebuild an input written by :meth:`to_json`."""
        return cls(str(data["role"]), str(data["name"]), str(data["digest"]), int(data["size"]))


@dataclass(frozen=True)
class WorkOrder:
    """A claimed run, as the ledger service describes it to the runner that holds the claim."""

    run_id: str
    kind: str
    spec: dict[str, Any]
    spec_digest: str
    params: dict[str, Any]
    seed: int
    device: str
    inputs: list[Input]
    run_token: str
    reproduces: str | None = None
    environment_digest: str | None = None
    """The digest of the environment recorded at the claim (the runner's); a node that executes the run
    elsewhere reports its own."""

    @property
    def datasets(self) -> list[Input]:
        """The dataset inputs in the run's order (the first is the training data)."""
        return [item for item in self.inputs if item.role == "dataset"]

    @property
    def code(self) -> Input | None:
        """The code archive, when the run has one."""
        return next((item for item in self.inputs if item.role == "code"), None)

    @property
    def resources(self) -> dict[str, Any]:
        """What the pipeline spec asks the backend for (``cpus``, ``gpus``, ``memory_mb``); empty for defaults."""
        return dict(self.spec.get("resources") or {})

    @property
    def time_limit(self) -> float | None:
        """The spec's time limit in seconds, when it sets one."""
        limit = self.spec.get("time_limit_seconds")
        return None if limit is None else float(limit)

    def to_json(self) -> dict[str, Any]:
        """The work order as JSON values."""
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "spec": self.spec,
            "spec_digest": self.spec_digest,
            "params": self.params,
            "seed": self.seed,
            "device": self.device,
            "inputs": [item.to_json() for item in self.inputs],
            "run_token": self.run_token,
            "reproduces": self.reproduces,
            "environment_digest": self.environment_digest,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkOrder:
        """Rebuild a work order written by :meth:`to_json`."""
        return cls(
            run_id=str(data["run_id"]),
            kind=str(data["kind"]),
            spec=dict(data["spec"]),
            spec_digest=str(data["spec_digest"]),
            params=dict(data.get("params") or {}),
            seed=int(data["seed"]),
            device=str(data["device"]),
            inputs=[Input.from_json(item) for item in data.get("inputs") or []],
            run_token=str(data["run_token"]),
            reproduces=data.get("reproduces"),
            environment_digest=data.get("environment_digest"),
        )


@dataclass(frozen=True)
class Output:
    """A file a run produced, already uploaded to the ledger's content-addressed store."""

    name: str
    digest: str
    size: int
    media_type: str

    def to_json(self) -> dict[str, Any]:
        """The output as JSON values."""
        return {"name": self.name, "digest": self.digest, "size": self.size, "media_type": self.media_type}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Output:
        """Rebuild an output written by :meth:`to_json`."""
        return cls(str(data["name"]), str(data["digest"]), int(data["size"]), str(data["media_type"]))


@dataclass(frozen=True)
class Outcome:
    """How an execution ended.

    ``ok`` with its final metric points (those not yet reported as progress) and
    uploaded outputs, or not ``ok`` with a one-line ``error``. ``environment``
    is what the run executed on (captured on the node that ran it) and
    ``resources`` what it used: ``cpu_seconds`` (the whole process tree),
    ``peak_rss_bytes``, ``wall_seconds``, ``gpu_seconds`` and
    ``peak_gpu_memory_bytes`` when CUDA was used, ``host``, ``backend``.
    """

    ok: bool
    metrics: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    error: str | None = None
    environment: dict[str, Any] | None = None
    resources: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The outcome as JSON values."""
        return {
            "ok": self.ok,
            "metrics": self.metrics,
            "outputs": [item.to_json() for item in self.outputs],
            "error": self.error,
            "environment": self.environment,
            "resources": self.resources,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        """Rebuild an outcome written by :meth:`to_json`."""
        return cls(
            ok=bool(data["ok"]),
            metrics=list(data.get("metrics") or []),
            outputs=[Output.from_json(item) for item in data.get("outputs") or []],
            error=data.get("error"),
            environment=data.get("environment"),
            resources=dict(data.get("resources") or {}),
        )


class Execution(Protocol):
    """One run executing on a backend."""

    def finished(self) -> bool:
        """Whether the run has ended (then :meth:`outcome` answers at once)."""
        ...

    def progress(self) -> list[dict[str, Any]]:
        """Metric points reported since the last call (may be none)."""
        ...

    def outcome(self) -> Outcome:
        """How the run ended; only after :meth:`finished` said True."""
        ...

    def cancel(self) -> None:
        """Stop the run now, whatever it is doing."""
        ...


class Backend(Protocol):
    """Where runs execute: ``local`` or ``ray``."""

    name: str
    #: True when runs execute on this machine, so ``--device auto`` is resolved here
    #: (a cluster's nodes have their own devices).
    devices_here: bool
    #: True when a run keeps executing after its runner dies (a cluster job), so a run
    #: whose start could not be confirmed is left for re-attachment rather than failed.
    jobs_outlive_runner: bool

    def ready(self) -> bool:
        """Whether runs can be started now (a cluster that cannot be reached is not ready)."""
        ...

    def start(self, order: WorkOrder, device: str) -> Execution:
        """Start executing a freshly claimed run on ``device`` (``cpu`` or ``cuda``)."""
        ...

    def reattach(self, order: WorkOrder, device: str) -> Execution | None:
        """The execution of a run that another (dead) runner started, or None when there is none to resume."""
        ...

    def close(self) -> None:
        """Let go of what the backend holds (workers, connections)."""
        ...


__all__ = ["Backend", "Execution", "Input", "Outcome", "Output", "WorkOrder"]
