"""Single-record predictions from the event loop, served in batches by one thread.

Predicting one record costs little; carrying a request between threads costs
more (each hand-over is a wake-up and a wait for the interpreter lock). So
``POST /v1/models/{name}/predict`` stays on the API's event loop and puts its
model name, record and API key digest on this queue. One thread takes
everything queued, authenticates each distinct key once (the freshness check
starts after every request of the batch arrived, so none is answered from an
older state) and serves the whole batch with one
:meth:`~service.serving.predict.PredictionService.submit_gathered`: one deployment read,
one model call per version, one hand-over to the group committer. Each answer
goes back to the event loop when its events are durable, while the thread
already serves the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from service.application.auth import remembered_versions
from service.application.ledger import Ledger
from service.common.freshness import Remembered
from service.common.group_call import once_per_key
from service.serving.batching import BatchThread
from service.serving.predict import PredictionService
from service.serving.prediction_request import PredictAsk, PredictRecord, Served

MAX_BATCH = 256  # requests served together at most


@dataclass
class _Waiting:
    """A queued request and where its answer goes."""

    model_name: str
    record: PredictRecord
    digest: str
    loop: asyncio.AbstractEventLoop
    answer: asyncio.Future[Served]
    started: float = field(default_factory=time.perf_counter)

    def settle(self, outcome: Future[list[Served]] | BaseException) -> None:
        """Hand the outcome to the event loop (from any thread)."""
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self.loop.call_soon_threadsafe(_settle, self.answer, outcome)


def _settle(answer: asyncio.Future[Served], outcome: Future[list[Served]] | BaseException) -> None:
    if answer.done():  # the request was cancelled meanwhile
        return
    error = outcome if isinstance(outcome, BaseException) else outcome.exception()
    if error is not None:
        answer.set_exception(error)
    else:
        assert isinstance(outcome, Future)
        answer.set_result(outcome.result()[0])


class PredictQueue(BatchThread[_Waiting]):
    """Single-record requests, served together by one thread.

    ``authorize(digest, remembered)`` maps an API key digest to the actor
    who may predict, or raises (unauthenticated, forbidden); it reads the
    ledger, so it runs on the queue's thread, once per distinct key of a batch.
    Before that, one query asks whether anything this process remembers of the
    batch's keys, their principals and the models' deployments has changed;
    when nothing has (the steady state), no further look-up is needed, and
    ``authorize`` is told so (:attr:`Remembered.CURRENT`, as
    :func:`~service.application.auth.authorize_digest` takes it).
    """

    def __init__(
        self,
        predictor: PredictionService,
        ledger: Ledger,
        authorize: Callable[[str, Remembered], str],
        max_batch: int = MAX_BATCH,
    ) -> None:
        super().__init__("mlledger-predict-queue", max_batch)
        self._predictor = predictor
        self._ledger = ledger
        self._authorize = authorize

    async def predict(self, model_name: str, record: PredictRecord, digest: str) -> Served:
        """Predict one record for the holder of the key ``digest``; returns once its events are durable."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(model_name, record, digest, loop, loop.create_future())
        self._put(waiting)
        return await waiting.answer

    def _fail(self, batch: list[_Waiting], error: BaseException) -> None:
        for waiting in batch:
            waiting.settle(error)

    def _serve(self, batch: list[_Waiting]) -> None:
        remembered = self._remembered(batch)
        actors: dict[str, str | Exception] = {}
        asks: list[PredictAsk] = []
        served: list[_Waiting] = []
        for waiting in batch:
            try:
                actor = once_per_key(actors, waiting.digest, lambda digest: self._authorize(digest, remembered))
            except Exception as exc:
                waiting.settle(exc)
                continue
            asks.append(PredictAsk(waiting.model_name, [waiting.record], actor, waiting.started))
            served.append(waiting)
        for waiting, future in zip(served, self._predictor.submit_gathered(asks, remembered), strict=True):
            future.add_done_callback(waiting.settle)

    def _remembered(self, batch: list[_Waiting]) -> Remembered:
        """Whether nothing the batch relies on that this process remembers has a newer event (one query)."""
        known: dict[uuid.UUID, int] = {}
        for digest in {waiting.digest for waiting in batch}:
            known.update(remembered_versions(self._ledger, digest))
        for model_name in {waiting.model_name for waiting in batch}:
            known.update(self._predictor.remembered_deployment(model_name))
        current = bool(known) and not self._ledger.has_newer(known)
        return Remembered.CURRENT if current else Remembered.UNCHECKED
