"""Serving predictions: route, check, predict, explain, encrypt, record.

A request names a model; its deployment decides which version answers each
record (:mod:`service.serving.routing`). A stopped deployment serves nothing
(503 with the operator's reason).

Everything that can refuse a request is checked before anything is written:
the deployment (:mod:`service.serving.deployments`), every record against the
serving version's input schema (:mod:`service.serving.row_check`), the data
subjects (:mod:`service.serving.subject_keys`: an erased subject's data is not
processed again). Then the models predict and explain
(:mod:`service.serving.inference`), inputs of data subjects are encrypted with
their keys, and all the request's predictions go to the group committer
together (:mod:`service.serving.prediction_events`); the answer leaves only
after they are durable.

Concurrent requests share what they can: one read of the deployment and, for
small requests, one call of the model and its explainer, whose fixed costs
dominate a single record.
"""

from __future__ import annotations

import functools
import random
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from domain.deployment import Deployment
from domain.errors import InvalidPayload
from domain.prediction import CHALLENGER, Prediction, check_request_id
from service.application.ledger_core import LedgerCore
from service.common.batch import Failed, batch_else_each
from service.common.freshness import Remembered
from service.common.group_call import once_per_key
from service.serving.deployments import LiveDeployments
from service.serving.group_commit import GroupCommitter
from service.serving.inference import SHARED_INFERENCE_ROWS, Infer, Inference, Inferred
from service.serving.models import ModelCache, ServedModel
from service.serving.prediction_events import prediction_made
from service.serving.prediction_request import COMMIT_TIMEOUT, PredictAsk, PredictRecord, Served
from service.serving.routing import Route, Router
from service.serving.row_check import check_rows, shadow_rows
from service.serving.subject_keys import SubjectKeys, subjects_of
from service.serving.vault import SubjectKey, SubjectVault

__all__ = [
    "COMMIT_TIMEOUT",
    "SHARED_INFERENCE_ROWS",
    "PredictAsk",
    "PredictRecord",
    "PredictionService",
    "Remembered",
    "Served",
]


@dataclass(slots=True)
class _Plan:
    """A request that passed every check, on its way through the models to the committer."""

    ask: PredictAsk
    future: Future[list[Served]]
    request_ids: list[str]
    answering: list[Route]  # the champion and the canary, those that answer records of this request
    challenger: Route | None
    checked: list[dict[str, Any]]  # each record's row as checked, by index
    shadow_rows: dict[int, dict[str, Any]]  # the rows the challenger can read, by index
    subjects: dict[str, int]  # each data subject, with the index of its first record
    keys: dict[str, SubjectKey] = field(default_factory=dict)
    answers: list[_Answer] = field(default_factory=list)  # one per answering route, once inferred
    shadow: Inferred | None = None  # the challenger's, once inferred


@dataclass(frozen=True, slots=True)
class _Answer:
    """What a route's model answered for the records of one request routed to it."""

    route: Route
    inferred: Inferred


@dataclass(frozen=True, slots=True)
class _Share:
    """One request's rows in a model call shared by the requests served together."""

    plan: _Plan
    route: Route
    rows: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A request of the batch that uses a subject key another request of the batch issued: served after it."""

    ask: PredictAsk
    future: Future[list[Served]]


def _pass_on(target: Future[list[Served]], done: Future[list[Served]]) -> None:
    error = done.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(done.result())


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
        self._committer = committer
        self._max_rows = max_rows
        self._deployments = LiveDeployments(ledger)
        self._router = Router(ledger, cache, rng or random.Random())
        self._subject_keys = SubjectKeys(ledger, vault)
        self._inference = Inference(top_k)

    @property
    def subject_keys(self) -> SubjectKeys:
        """The data subjects' keys, shared with whatever else records this process's predictions."""
        return self._subject_keys

    def remembered_deployment(self, model_name: str) -> dict[uuid.UUID, int]:
        """The deployment version this process last read for the model (to check with others in one query)."""
        return self._deployments.remembered_versions(model_name)

    # -- entry points ----------------------------------------------------------
    def predict(self, model_name: str, records: Sequence[PredictRecord], caller: str) -> list[Served]:
        """Predict every record, record every prediction (and shadow), return the served ones once durable."""
        (future,) = self.submit([PredictAsk(model_name, records, caller)])
        return future.result(timeout=COMMIT_TIMEOUT)

    def submit(self, asks: Sequence[PredictAsk]) -> list[Future[list[Served]]]:
        """Serve requests from a thread of their own; each future gives its served predictions once durable.

        Each request is checked on its own (one request's bad record fails only
        that request); the rows of all of them go through each model version in
        one call, and their predictions go to the group committer together.
        Each deployment is read by a query that starts after the requests
        arrived (shared with concurrent callers); small requests share their
        model calls with other threads' (:meth:`Inference.shared`).
        """
        return self._submit(asks, Remembered.UNCHECKED, self._inference.shared)

    def submit_gathered(self, asks: Sequence[PredictAsk], remembered: Remembered) -> list[Future[list[Served]]]:
        """:meth:`submit` for a caller that gathered the concurrent requests itself (the predict queue).

        Their model calls go straight to the models, not offered to other
        threads to share. ``remembered``: :attr:`Remembered.CURRENT` when the
        caller found the deployments this process remembers
        (:meth:`remembered_deployment`) current with a query that started after
        every request arrived.
        """
        return self._submit(asks, remembered, self._inference.predict)

    # -- serving a batch of requests -------------------------------------------
    def _submit(self, asks: Sequence[PredictAsk], remembered: Remembered, infer: Infer) -> list[Future[list[Served]]]:
        futures: list[Future[list[Served]]] = [Future() for _ in asks]
        plans: list[_Plan] = []
        deployments: dict[str, Deployment | Exception] = {}  # one read per model for all the requests
        issued_in_batch: set[str] = set()
        waiting: list[_Waiting] = []
        subject_keys = self._subject_keys
        for ask, future in zip(asks, futures, strict=True):
            try:
                plan = self._check(ask, future, deployments, remembered)
                if subject_keys.issued_by_others(plan.subjects, issued_in_batch):
                    waiting.append(_Waiting(ask, future))
                    continue
                plan.keys = subject_keys.keys(plan.subjects)  # last: a new subject's key is issued here
            except Exception as exc:
                future.set_exception(exc)
                continue
            subject_keys.hold_new(plan.keys, future, issued_in_batch)
            plans.append(plan)
        for plan in self._inferred(plans, infer):
            try:
                items, results = self._events(plan)
                committed = self._committer.submit(items)
            except Exception as exc:
                self._fail(plan, exc)
                continue
            committed.add_done_callback(functools.partial(self._settle, plan, results))
        if waiting:  # after the requests that record their subjects: they wait for those commits
            retried = self._submit([w.ask for w in waiting], Remembered.UNCHECKED, infer)
            for w, again in zip(waiting, retried, strict=True):
                again.add_done_callback(functools.partial(_pass_on, w.future))
        return futures

    def _check(
        self,
        ask: PredictAsk,
        future: Future[list[Served]],
        deployments: dict[str, Deployment | Exception],
        remembered: Remembered,
    ) -> _Plan:
        """Everything that can refuse a request before its subjects' keys, checked before any model runs.

        ``deployments`` keeps the deployment read (or the refusal) per model for
        the other requests served together.
        """
        records = ask.records
        if not records:
            raise InvalidPayload("the batch is empty; send at least one record", field="records")
        if len(records) > self._max_rows:
            raise InvalidPayload(
                f"the batch has {len(records)} records; the limit is {self._max_rows}", field="records"
            )
        request_ids = checked_request_ids(records)
        live = self._deployments
        deployment = once_per_key(deployments, ask.model_name, lambda name: live.serving(name, remembered))
        routing = self._router.route(deployment, len(records))
        answering = routing.answering
        checked: list[dict[str, Any]] = [{} for _ in records]
        for route in answering:
            check_rows(records, route, checked)
        challenger = routing.challenger
        shadows = {} if challenger is None else shadow_rows(records, challenger)
        return _Plan(ask, future, request_ids, answering, challenger, checked, shadows, subjects_of(records))

    def _inferred(self, plans: list[_Plan], infer: Infer) -> list[_Plan]:
        """The plans whose rows were predicted and explained: one model call per version for all of them.

        When a shared call fails, each plan's rows are tried on their own, so
        only the requests whose rows fail are refused.
        """
        calls: dict[int, list[_Share]] = {}  # by model: the shares of its one call
        for plan in plans:
            for route in plan.answering:
                rows = [plan.checked[i] for i in route.indexes]
                calls.setdefault(id(route.served), []).append(_Share(plan, route, rows))
            challenger = plan.challenger
            if challenger is not None and plan.shadow_rows:
                shadow = _Share(plan, challenger, list(plan.shadow_rows.values()))
                calls.setdefault(id(challenger.served), []).append(shadow)
        errors: dict[int, Exception] = {}
        for shares in calls.values():
            served = shares[0].route.served
            outcomes = batch_else_each(
                functools.partial(_infer_together, infer, served),
                functools.partial(self._inference.predict, served),
                [share.rows for share in shares],
            )
            for share, outcome in zip(shares, outcomes, strict=True):
                plan = share.plan
                if isinstance(outcome, Failed):
                    errors.setdefault(id(plan), outcome.error)
                elif share.route is plan.challenger:
                    plan.shadow = outcome
                else:
                    plan.answers.append(_Answer(share.route, outcome))
        ready = []
        for plan in plans:
            if id(plan) in errors:
                self._fail(plan, errors[id(plan)])
            else:
                ready.append(plan)
        return ready

    def _events(self, plan: _Plan) -> tuple[list[Any], list[Served]]:
        """The request's new subjects and prediction events (shadows included), and what its caller gets."""
        ask, records, request_ids, checked = plan.ask, plan.ask.records, plan.request_ids, plan.checked
        model_name = ask.model_name
        latency_ms = (time.perf_counter() - ask.started) * 1000.0
        now = Prediction.Made.create_timestamp()  # one moment for the request's events
        event_for = functools.partial(prediction_made, keys=plan.keys, latency_ms=latency_ms, actor=ask.caller, now=now)
        count = len(records)
        # By record index: the champion and the canary together answer every record.
        results: list[Any] = [None] * count
        made: list[Any] = [None] * count
        for answer in plan.answers:
            route = answer.route
            number, role = route.version.number, route.role
            for i, (output, code, base) in zip(route.indexes, answer.inferred.rows(), strict=True):
                result = Served("", request_ids[i], model_name, number, role, output, code)
                made[i] = event_for(result, route, records[i], checked[i], base, shadow_of=None)
                results[i] = result
        challenger, shadow = plan.challenger, plan.shadow
        if challenger is not None and shadow is not None:
            number = challenger.version.number
            for i, (output, code, base) in zip(plan.shadow_rows, shadow.rows(), strict=True):
                result = Served("", request_ids[i], model_name, number, CHALLENGER, output, code)
                shadow_of = results[i].prediction_id
                made.append(event_for(result, challenger, records[i], plan.shadow_rows[i], base, shadow_of=shadow_of))
        return [*self._subject_keys.new_subjects(plan.keys, ask.caller), *made], results

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
        self._subject_keys.destroy_new(plan.keys)
        plan.future.set_exception(error)


def _infer_together(infer: Infer, served: ServedModel, parts: list[list[dict[str, Any]]]) -> list[Inferred]:
    """The rows of several requests through one model call, split back per request."""
    if len(parts) == 1:
        return [infer(served, parts[0])]
    return infer(served, [row for rows in parts for row in rows]).split([len(rows) for rows in parts])


def checked_request_ids(records: Sequence[PredictRecord | Any]) -> list[str]:
    """Each record's request id: its own (checked, unique in the batch) or a new one."""
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
