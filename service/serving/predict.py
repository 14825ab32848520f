"""Serving predictions: route, check, predict, explain, encrypt, record.

A request names a model; its deployment decides which version answers each
record: the champion, or the canary for its share of traffic. A challenger
predicts the same records in shadow; those predictions are recorded and never
returned. A stopped deployment serves nothing (503 with the operator's reason).

Everything that can refuse a request is checked before anything is written:
the deployment, every record against the serving version's input schema, the
data subjects (an erased subject's data is not processed again). Then the
models predict and explain, inputs of data subjects are encrypted with their
keys, and all the request's predictions go to the group committer together;
the answer leaves only after they are durable.

Concurrent requests share what they can: one read of the deployment (the last
one read is kept, and an indexed query per shared read asks whether the ledger
has anything newer, so a stop recorded by any process takes effect at once)
and, for small requests, one call of the model and its explainer, whose fixed
costs dominate a single record.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from domain.deployment import Deployment
from domain.errors import DeploymentStopped, InvalidPayload, NotFound, RuleViolated
from domain.model import Model, ModelVersion
from domain.prediction import (
    CANARY,
    CHALLENGER,
    CHAMPION,
    Prediction,
    check_input_row,
    check_request_id,
    check_subject_id,
)
from domain.subject import Subject
from service.application.ledger_core import LedgerCore
from service.common.group_call import GroupCall, once_per_key
from service.ml.explain import top_reason_codes
from service.serving.group_commit import GroupCommitter
from service.serving.models import ModelCache, ServedModel
from service.serving.vault import SubjectVault


@dataclass(frozen=True)
class PredictRecord:
    """One record to predict: its input and, optionally, a request id and a data subject."""

    input: dict[str, Any]
    request_id: str | None = None
    subject_id: str | None = None


@dataclass
class Served:
    """What the caller gets back for one record."""

    prediction_id: str
    request_id: str
    model_name: str
    version: int
    role: str
    output: dict[str, Any]
    reason_codes: list[dict[str, Any]]
    position: int = 0


@dataclass
class _Route:
    version: ModelVersion
    served: ServedModel
    role: str
    indexes: list[int] = field(default_factory=list)


_Outcome = tuple[dict[str, Any], list[dict[str, Any]], float | None]
SHARED_INFERENCE_ROWS = 32  # requests up to this size share model calls with concurrent ones
_MAX_GROUPS = 1024
COMMIT_TIMEOUT = 60.0  # seconds a request waits for its events to be durable


@dataclass(frozen=True)
class PredictAsk:
    """One request: records for a model, from a caller, arrived at ``started`` (``time.perf_counter``)."""

    model_name: str
    records: Sequence[PredictRecord]
    caller: str
    started: float = field(default_factory=time.perf_counter)


@dataclass
class _Plan:
    """A request that passed every check, on its way through the models to the committer."""

    ask: PredictAsk
    future: Future[list[Served]]
    request_ids: list[str]
    routes: list[_Route]  # the champion and the canary, those that serve records of this request
    challenger: _Route | None
    checked: list[dict[str, Any]]
    shadow_rows: dict[int, dict[str, Any]]
    keys: dict[str, tuple[str, bytes, bool]]
    outcomes: list[_Outcome | None] = field(init=False)
    served_by: list[_Route] = field(init=False)
    shadows: list[tuple[int, _Outcome]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.outcomes = [None] * len(self.ask.records)
        self.served_by = [self.routes[0]] * len(self.ask.records)


class _IssuedHere(Exception):
    """The request uses a subject key another request of the same batch issued: it is served after it."""


def _pass_on(target: Future[list[Served]], done: Future[list[Served]]) -> None:
    error = done.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(done.result())


T = TypeVar("T")


def _split(items: list[T], sizes: list[int]) -> Iterator[list[T]]:
    """``items`` cut into consecutive parts of ``sizes``."""
    start = 0
    for size in sizes:
        yield items[start : start + size]
        start += size


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


_PLAIN_NUMBERS = frozenset({float, int})


def _checked_rows(
    records: Sequence[PredictRecord], indexes: list[int], served: ServedModel, out: list[dict[str, Any]]
) -> None:
    """Check the records at ``indexes`` against the served version's input schema into ``out``.

    The common case, an all-numeric schema and rows holding exactly its columns
    with finite ints and floats, is accepted in a few C-level passes (the row
    itself is kept: consumers read it by name); anything else goes through
    :func:`check_input_row`, which accepts the same rows (in schema order) and
    names the field of the first problem.
    """
    names, schema = served.numeric_names, served.input_schema
    for i in indexes:
        row = records[i].input
        if names is not None and type(row) is dict and row.keys() == names:
            values = row.values()
            try:
                plain = set(map(type, values)) <= _PLAIN_NUMBERS and math.isfinite(math.fsum(values))
            except OverflowError:
                plain = False
            if plain:
                out[i] = row  # exactly the schema's columns, all finite numbers: the row as it came
                continue
        out[i] = check_input_row(row, schema, field=f"records.{i}.input")


class PredictionService:
    """Predicts for the API (single records and batches) and records every prediction."""

    def __init__(
        self,
        ledger: LedgerCore,
        cache: ModelCache,
        vault: SubjectVault,
        committer: GroupCommitter,
        *,
        top_k: int = 4,
        max_rows: int = 10_000,
        rng: random.Random | None = None,
    ) -> None:
        self._ledger = ledger
        self._cache = cache
        self._vault = vault
        self._committer = committer
        self._top_k = top_k
        self._max_rows = max_rows
        self._rng = rng or random.Random()
        self._lock = threading.Lock()  # the canary draws and the subjects being issued
        self._deployments: dict[str, Deployment] = {}
        self._versions: dict[str, ModelVersion] = {}
        self._deployment_reads: dict[str, GroupCall[None, Deployment | None]] = {}
        self._inference: dict[str, GroupCall[tuple[ServedModel, list[dict[str, Any]]], list[_Outcome]]] = {}
        self._issuing: dict[str, Future[list[Served]]] = {}  # subject -> the request recording it, until it is over

    # -- the deployment --------------------------------------------------------
    def remembered_deployment(self, model_name: str) -> dict[uuid.UUID, int]:
        """The deployment version this process last read for the model (to check with others in one query)."""
        known = self._deployments.get(model_name)
        return {} if known is None else {Deployment.create_id(model_name=model_name): known.version}

    def _deployment(self, model_name: str, known_current: bool = False) -> Deployment:
        """The model's deployment as the ledger holds it now (a stop recorded by any process counts).

        Concurrent requests share one read, which starts after each of them
        arrived. ``known_current``: the caller found the remembered deployment
        current with a query that started after the request arrived.
        """
        known = self._deployments.get(model_name) if known_current else None
        if known is not None:
            deployment: Deployment | None = known
        else:
            reads = self._deployment_reads.get(model_name)
            if reads is None:
                if len(self._deployment_reads) >= _MAX_GROUPS:
                    self._deployment_reads.clear()
                reads = self._deployment_reads.setdefault(
                    model_name, GroupCall(lambda asks: [self._read_deployment(model_name)] * len(asks))
                )
            deployment = reads(None)
        if deployment is None:
            try:
                self._ledger.get(Model.create_id(name=model_name), Model)
            except NotFound:
                raise NotFound(f"no model named {model_name!r}", field="name") from None
            raise RuleViolated(f"{model_name} is not deployed; set a champion first", field="name")
        if deployment.retired:
            raise DeploymentStopped(f"{model_name} is retired and serves no predictions")
        if deployment.stopped:
            raise DeploymentStopped(f"{model_name} is stopped: {deployment.stop_reason or 'no reason given'}")
        if deployment.champion is None:
            raise RuleViolated(f"{model_name} has no champion to serve predictions", field="name")
        return deployment

    def _read_deployment(self, model_name: str) -> Deployment | None:
        """The deployment, or None; the last one read is kept and read again only when the ledger has newer events."""
        deployment_id = Deployment.create_id(model_name=model_name)
        known = self._deployments.get(model_name)
        if known is not None and not self._ledger.has_newer({deployment_id: known.version}):
            return known
        try:
            read: Deployment = self._ledger.get(deployment_id, Deployment)
        except NotFound:
            self._deployments.pop(model_name, None)
            return None
        self._deployments[model_name] = read
        return read

    def _version(self, version_id: str) -> ModelVersion:
        """A model version; what serving reads of it (id, number, schema, run, artifact) never changes."""
        version = self._versions.get(version_id)
        if version is None:
            version = self._ledger.get(version_id, ModelVersion)
            if len(self._versions) >= 256:
                self._versions.clear()
            self._versions[version_id] = version
        return version

    def _route(self, deployment: Deployment, count: int) -> tuple[_Route, _Route | None, _Route | None]:
        assert deployment.champion is not None
        champion_version = self._version(deployment.champion.version_id)
        champion = _Route(champion_version, self._cache.get(champion_version), CHAMPION)
        canary = None
        if deployment.canary is not None:
            canary_version = self._version(deployment.canary.version_id)
            canary = _Route(canary_version, self._cache.get(canary_version), CANARY)
            share = deployment.canary.share
            with self._lock:
                draws = [self._rng.random() for _ in range(count)]
            for i, draw in enumerate(draws):
                (canary if draw < share else champion).indexes.append(i)
        else:
            champion.indexes = list(range(count))
        challenger = None
        if deployment.challenger is not None:
            challenger_version = self._version(deployment.challenger.version_id)
            challenger = _Route(challenger_version, self._cache.get(challenger_version), CHALLENGER)
        return champion, canary, challenger

    # -- predicting ------------------------------------------------------------
    def predict(self, model_name: str, records: Sequence[PredictRecord], caller: str) -> list[Served]:
        """Predict every record, record every prediction (and shadow), return the served ones once durable."""
        (future,) = self.submit([PredictAsk(model_name, records, caller)])
        return future.result(timeout=COMMIT_TIMEOUT)

    def submit(
        self, asks: Sequence[PredictAsk], known_current: bool = False, *, gathered: bool = False
    ) -> list[Future[list[Served]]]:
        """Serve several requests together; each future gives its request's served predictions once durable.

        Each request is checked on its own (one request's bad record fails only
        that request); the rows of all of them go through each model version in
        one call, and their predictions go to the group committer together.
        ``known_current``: the caller found the deployments this process
        remembers current (:meth:`remembered_deployment`) with a query that
        started after every request arrived. ``gathered``: the caller already
        gathered the concurrent requests (the predict queue), so the model calls
        are not offered to other threads' small requests to share.
        """
        futures: list[Future[list[Served]]] = [Future() for _ in asks]
        plans: list[_Plan] = []
        deployments: dict[str, Deployment | Exception] = {}  # one read per model for all the requests
        issued_here: set[str] = set()
        later: list[tuple[PredictAsk, Future[list[Served]]]] = []
        for ask, future in zip(asks, futures, strict=True):
            try:
                plans.append(self._plan(ask, future, deployments, issued_here, known_current))
            except _IssuedHere:
                later.append((ask, future))
            except Exception as exc:
                future.set_exception(exc)
        for plan in self._inferred(plans, self._predict if gathered else self._infer):
            try:
                items, results = self._events(plan)
                committed = self._committer.submit(items)
            except Exception as exc:
                self._fail(plan, exc)
                continue
            committed.add_done_callback(functools.partial(self._settle, plan, results))
        if later:  # after the requests that record their subjects: they wait for those commits
            retried = self.submit([ask for ask, _ in later], gathered=gathered)
            for (_, future), again in zip(later, retried, strict=True):
                again.add_done_callback(functools.partial(_pass_on, future))
        return futures

    def _plan(
        self,
        ask: PredictAsk,
        future: Future[list[Served]],
        deployments: dict[str, Deployment | Exception],
        issued_here: set[str],
        known_current: bool = False,
    ) -> _Plan:
        """Everything that can refuse a request, checked before any model runs; its subjects' keys last.

        ``deployments`` keeps the deployment read (or the refusal) per model for
        the other requests served together; ``issued_here`` the subjects whose
        keys their requests issued (:class:`_IssuedHere` for a request that
        would use one of those keys before its subject is recorded).
        """
        records = ask.records
        if not records:
            raise InvalidPayload("the batch is empty; send at least one record", field="records")
        if len(records) > self._max_rows:
            raise InvalidPayload(
                f"the batch has {len(records)} records; the limit is {self._max_rows}", field="records"
            )
        request_ids = self._request_ids(records)
        deployment = once_per_key(deployments, ask.model_name, lambda name: self._deployment(name, known_current))
        champion, canary, challenger = self._route(deployment, len(records))
        routes = [r for r in (champion, canary) if r is not None and r.indexes]
        checked: list[dict[str, Any]] = [{} for _ in records]
        for route in routes:
            _checked_rows(records, route.indexes, route.served, checked)
        shadow_rows: dict[int, dict[str, Any]] = {}
        if challenger is not None:
            for i, record in enumerate(records):
                try:
                    shadow_rows[i] = check_input_row(record.input, challenger.served.input_schema)
                except InvalidPayload:
                    continue  # the challenger cannot read this record; it simply does not shadow it
        keys = self._subject_keys(records, issued_here)
        for subject, (_, _, created) in keys.items():
            if created:
                issued_here.add(subject)
                with self._lock:
                    self._issuing[subject] = future
                future.add_done_callback(functools.partial(self._issued, subject))
        return _Plan(ask, future, request_ids, routes, challenger, checked, shadow_rows, keys)

    def _inferred(
        self, plans: list[_Plan], infer: Callable[[ServedModel, list[dict[str, Any]]], list[_Outcome]]
    ) -> list[_Plan]:
        """The plans whose rows were predicted and explained: one model call per version for all of them.

        When a shared call fails, each plan's rows are tried on their own, so
        only the requests whose rows fail are refused.
        """
        jobs: dict[int, list[tuple[_Plan, _Route, list[dict[str, Any]]]]] = {}
        for plan in plans:
            for route in plan.routes:
                jobs.setdefault(id(route.served), []).append((plan, route, [plan.checked[i] for i in route.indexes]))
            if plan.challenger is not None and plan.shadow_rows:
                shadow = (plan, plan.challenger, list(plan.shadow_rows.values()))
                jobs.setdefault(id(plan.challenger.served), []).append(shadow)
        errors: dict[int, Exception] = {}
        for job in jobs.values():
            served = job[0][1].served
            parts: list[list[_Outcome] | None]
            try:
                outcomes = infer(served, [row for _, _, rows in job for row in rows])
                parts = list(_split(outcomes, [len(rows) for _, _, rows in job]))
            except Exception as exc:
                if len(job) == 1:
                    errors.setdefault(id(job[0][0]), exc)
                    continue
                parts = []
                for plan, _, rows in job:  # the shared call failed: find whose rows fail it
                    try:
                        parts.append(self._predict(served, rows))
                    except Exception as error:
                        errors.setdefault(id(plan), error)
                        parts.append(None)
            for (plan, route, _), part in zip(job, parts, strict=True):
                if part is None:
                    continue
                if route is plan.challenger:
                    plan.shadows = list(zip(plan.shadow_rows, part, strict=True))
                    continue
                for i, outcome in zip(route.indexes, part, strict=True):
                    plan.outcomes[i], plan.served_by[i] = outcome, route
        ready = []
        for plan in plans:
            if id(plan) in errors:
                self._fail(plan, errors[id(plan)])
            else:
                ready.append(plan)
        return ready

    def _events(self, plan: _Plan) -> tuple[list[Any], list[Served]]:
        """The request's new subjects and prediction events (shadows included), and what its caller gets."""
        ask, records = plan.ask, plan.ask.records
        latency_ms = (time.perf_counter() - ask.started) * 1000.0
        now = Prediction.Made.create_timestamp()  # one moment for the request's events
        event_for = functools.partial(
            self._prediction, keys=plan.keys, latency_ms=latency_ms, actor=ask.caller, now=now
        )
        results: list[Served] = []
        made: list[Any] = []
        for i, outcome in enumerate(plan.outcomes):
            assert outcome is not None  # the champion and the canary together answer every record
            output, code, base = outcome
            route = plan.served_by[i]
            result = Served("", plan.request_ids[i], ask.model_name, route.version.number, route.role, output, code)
            made.append(event_for(result, route, records[i], plan.checked[i], base, shadow_of=None))
            results.append(result)
        challenger = plan.challenger
        for i, (output, code, base) in plan.shadows:
            assert challenger is not None
            number = challenger.version.number
            shadow = Served("", plan.request_ids[i], ask.model_name, number, CHALLENGER, output, code)
            shadow_of = results[i].prediction_id
            made.append(event_for(shadow, challenger, records[i], plan.shadow_rows[i], base, shadow_of=shadow_of))
        new_subjects = [
            Subject(subject_id=subject, key_id=key_id, actor=ask.caller)
            for subject, (key_id, _, created) in plan.keys.items()
            if created
        ]
        return [*new_subjects, *made], results

    def _settle(self, plan: _Plan, results: list[Served], committed: Future[int]) -> None:
        """The request's answer, once its events are durable (or its error)."""
        error = committed.exception()
        if error is not None:
            self._fail(plan, error)
            return
        position = committed.result()
        for result in results:
            result.position = position
        plan.future.set_result(results)

    def _fail(self, plan: _Plan, error: BaseException) -> None:
        """Refuse the request; the keys of subjects whose first record this was are not kept."""
        for subject, (_, _, created) in plan.keys.items():
            if created:
                self._vault.destroy(subject)
        plan.future.set_exception(error)

    def _request_ids(self, records: Sequence[PredictRecord]) -> list[str]:
        ids: list[str] = []
        seen: set[str] = set()
        for i, record in enumerate(records):
            if record.request_id is None:
                ids.append(uuid.uuid4().hex)
                continue
            request_id = check_request_id(record.request_id, field=f"records.{i}.request_id")
            if request_id in seen:
                raise InvalidPayload(
                    f"request id {request_id!r} appears twice in the batch", field=f"records.{i}.request_id"
                )
            seen.add(request_id)
            ids.append(request_id)
        return ids

    def _subject_keys(
        self, records: Sequence[PredictRecord], issued_here: set[str]
    ) -> dict[str, tuple[str, bytes, bool]]:
        """Each subject's key (issued now for a new subject); refuse an erased subject.

        A key another request of this process issued is used only once that
        request is durable (its subject recorded) or failed (its key destroyed):
        a failure must not take a key others encrypted with.
        """
        subjects: dict[str, int] = {}
        for i, record in enumerate(records):
            if record.subject_id is not None:
                subjects.setdefault(check_subject_id(record.subject_id, field=f"records.{i}.subject_id"), i)
        if issued_here.intersection(subjects):
            raise _IssuedHere
        for subject in subjects:
            issuing = self._issuing.get(subject)
            if issuing is not None:
                wait([issuing], timeout=COMMIT_TIMEOUT)
        keys: dict[str, tuple[str, bytes, bool]] = {}
        for subject, i in subjects.items():
            found = self._vault.key_of(subject)
            if found is not None:
                keys[subject] = (found[0], found[1], False)
                continue
            try:
                self._ledger.get(Subject.create_id(subject_id=subject), Subject)
            except NotFound:
                continue  # a new subject: its key is issued below
            # A subject the ledger knows but whose key is gone was erased.
            raise RuleViolated(
                f"data subject {subject} was erased; their data is no longer processed",
                field=f"records.{i}.subject_id",
            )
        for subject in subjects:
            if subject not in keys:
                keys[subject] = self._vault.issue(subject)
        return keys

    def _issued(self, subject: str, done: Future[list[Served]]) -> None:
        """The request that issued the subject's key is over: later requests use the key (or a new one)."""
        with self._lock:
            if self._issuing.get(subject) is done:
                del self._issuing[subject]

    def _infer(self, served: ServedModel, rows: list[dict[str, Any]]) -> list[_Outcome]:
        """``_predict``; small requests share the model's calls with concurrent ones (fixed costs paid once)."""
        if len(rows) > SHARED_INFERENCE_ROWS:
            return self._predict(served, rows)
        group = self._inference.get(served.version_id)
        if group is None:
            if len(self._inference) >= _MAX_GROUPS:
                self._inference.clear()
            group = self._inference.setdefault(served.version_id, GroupCall(self._predict_each))
        return group((served, rows))

    def _predict_each(self, asks: list[tuple[ServedModel, list[dict[str, Any]]]]) -> list[list[_Outcome]]:
        """The rows of several requests for one version predicted in one call, split back per request."""
        outcomes = self._predict(asks[0][0], [row for _, rows in asks for row in rows])
        return list(_split(outcomes, [len(rows) for _, rows in asks]))

    def _predict(self, served: ServedModel, rows: list[dict[str, Any]]) -> list[_Outcome]:
        """(output, reason codes, explanation base value) per row."""
        matrix = served.model.matrix(rows)
        outputs = served.model.predict(matrix)
        if served.explainer is None or self._top_k == 0:
            return [(output, [], None) for output in outputs]
        contributions, base = served.explainer.attributions(matrix)
        codes = top_reason_codes(contributions, rows, served.features, top_k=self._top_k)
        return list(zip(outputs, codes, base.tolist(), strict=True))

    def _prediction(
        self,
        result: Served,
        route: _Route,
        record: PredictRecord,
        row: dict[str, Any],
        base: float | None,
        *,
        keys: dict[str, tuple[str, bytes, bool]],
        shadow_of: str | None,
        latency_ms: float,
        actor: str,
        now: datetime,
    ) -> Prediction.Made:
        version, explainer = route.version, route.served.explainer
        explanation = None
        if explainer is not None and base is not None:
            explanation = {"explainer": explainer.name, "output_space": explainer.output_space, "base_value": base}
        output = result.output
        fields: dict[str, Any] = dict(
            model_name=result.model_name,
            model_version_id=route.served.version_id,
            number=version.number,
            role=result.role,
            request_id=result.request_id,
            shadow_of=shadow_of,
            subject_id=record.subject_id,
            output=output,
            explanation=explanation,
            latency_ms=round(latency_ms, 3),
            actor=actor,
        )
        if record.subject_id is None:
            encoded = route.served.input_encoder.encoded(row)  # encoded once: for the digest and in the event
            fields.update(
                input=encoded,
                input_ciphertext=None,
                input_key_id=None,
                reason_codes=result.reason_codes,
                input_digest=_sha256(encoded.canonical),
            )
        else:
            key_id, key, _ = keys[record.subject_id]
            secret = {"input": row, "reason_values": [code.get("value") for code in result.reason_codes]}
            ciphertext = self._vault.encrypt(key_id, key, json.dumps(secret, sort_keys=True).encode())
            fields.update(
                input=None,
                input_ciphertext=ciphertext,
                input_key_id=key_id,
                reason_codes=[{k: v for k, v in code.items() if k != "value"} for code in result.reason_codes],
                input_digest=_sha256(ciphertext.encode()),
            )
        made = Prediction.made(timestamp=now, **fields)
        result.prediction_id = str(made.originator_id)
        return made
