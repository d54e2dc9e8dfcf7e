"""CoreVital's risk as an Arize Phoenix span annotation, so risky runs show in Phoenix's
annotation column and filters (`annotations['corevital.risk'].label == 'critical'`).

`PhoenixRiskAnnotator` is an OpenTelemetry span processor: add it to the tracer provider
next to the exporter that sends the spans to Phoenix. For every finished, sampled span that
carries `corevital.risk.score` it posts one annotation (name `corevital.risk`, annotator
kind `CODE`, label healthy | warning | critical, the score, the narrative as explanation) to
Phoenix's REST API, `POST {endpoint}/v1/span_annotations`.

Invariant: nothing here blocks or fails the application. `on_end` only queues (a full queue
drops, counted in `dropped`); one background thread posts in batches; a Phoenix that is down
or refuses costs the annotations, logged once per cause. Phoenix holds an annotation that
arrives before its span until the span is ingested, so the order of processors does not matter.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from .telemetry import attributes as attrs

_logger = logging.getLogger(__name__)

ENDPOINT_ENV = "PHOENIX_COLLECTOR_ENDPOINT"  # Phoenix's own variable, as its clients read it
API_KEY_ENV = "PHOENIX_API_KEY"
DEFAULT_ENDPOINT = "http://localhost:6006"
ANNOTATION_NAME = attrs.EVALUATION_NAME  # corevital.risk
ANNOTATOR_KIND = "CODE"
_BATCH = 100


class PhoenixRiskAnnotator(SpanProcessor):
    def __init__(
        self,
        endpoint: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 5.0,
        max_queue_size: int = 2048,
    ):
        base = endpoint or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT
        self.url = base.rstrip("/") + "/v1/span_annotations?sync=false"
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self.timeout_s = float(timeout_s)
        self.dropped = 0
        self._queue: queue.Queue = queue.Queue(max_queue_size)
        self._pending = 0
        self._idle = threading.Condition()
        self._logged: set[str] = set()
        self._stopped = False
        self._worker = threading.Thread(target=self._run, name="corevital-phoenix-annotator", daemon=True)
        self._worker.start()

    # -- SpanProcessor ---------------------------------------------------------------------

    def on_end(self, span: ReadableSpan) -> None:
        annotation = risk_annotation(span)
        if annotation is None or self._stopped:
            return
        with self._idle:
            try:
                self._queue.put_nowait(annotation)
            except queue.Full:
                self.dropped += 1
                return
            self._pending += 1

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000.0
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def shutdown(self) -> None:
        self.force_flush()
        self._stopped = True
        self._queue.put(None)
        self._worker.join(self.timeout_s + 1.0)

    # -- the worker ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < _BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            self._post(batch)
            with self._idle:
                self._pending -= len(batch)
                self._idle.notify_all()

    def _post(self, batch: list[dict]) -> None:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            self.url, data=json.dumps({"data": batch}).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except Exception as exc:  # Phoenix down or refusing: the annotations are lost, the app is not
            cause = f"{type(exc).__name__}: {getattr(exc, 'code', '')}"
            if cause not in self._logged:
                self._logged.add(cause)
                _logger.warning("CoreVital could not post %d risk annotation(s) to %s: %s", len(batch), self.url, exc)


def risk_annotation(span: ReadableSpan) -> dict | None:
    """The Phoenix span annotation of one CoreVital span, or None when it has no risk or is not sampled."""
    values = span.attributes or {}
    score = values.get(attrs.RISK_SCORE)
    context = span.get_span_context()
    if score is None or context is None or not context.trace_flags.sampled:
        return None
    result = {"score": float(score)}
    if values.get(attrs.RISK_LABEL) is not None:
        result["label"] = str(values[attrs.RISK_LABEL])
    if values.get(attrs.NARRATIVE):
        result["explanation"] = str(values[attrs.NARRATIVE])
    return {
        "span_id": f"{context.span_id:016x}",
        "name": ANNOTATION_NAME,
        "annotator_kind": ANNOTATOR_KIND,
        "identifier": ANNOTATION_NAME,  # one per span: a re-export updates it
        "result": result,
        "metadata": {attrs.RISK_FACTORS: list(values.get(attrs.RISK_FACTORS, ()))},
    }
