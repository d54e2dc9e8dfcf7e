"""One handler per instrumentor: turns each generate call into a span, events and metrics."""

from __future__ import annotations

import contextlib
import logging
import time

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.trace import SpanKind, Status, StatusCode

from .capture.session import CaptureOptions, CaptureSession
from .config import Settings
from .generate_call import GenerateCall, GenerateResult
from .live.call import LiveCall
from .telemetry import attributes as attrs
from .telemetry import content
from .telemetry.health import HealthRecorder
from .telemetry.metrics import Instruments

_logger = logging.getLogger(__name__)
OPERATION = gen_ai.GenAiOperationNameValues.TEXT_COMPLETION.value
PROVIDER = "huggingface"


class FaultLog:
    """Logs each internal fault once per (stage, exception type), however often it recurs."""

    def __init__(self):
        self._seen: set[tuple[str, str]] = set()

    def record(self, span, stage: str, exc: BaseException) -> None:
        description = f"{stage}: {type(exc).__name__}: {exc}"
        if span.is_recording():
            span.set_attribute(attrs.ERROR, description)
        key = (stage, type(exc).__name__)
        if key not in self._seen:
            self._seen.add(key)
            _logger.warning("CoreVital fault in %s; generation continues", stage, exc_info=exc)


class GenerationHandler:
    def __init__(self, tracer: trace.Tracer, instruments: Instruments, settings: Settings, on_step=None):
        self.tracer = tracer
        self.on_step = on_step  # instrument(on_step=...): called with every call's StepSummary
        self.instruments = instruments
        self.settings = settings
        self.faults = FaultLog()
        self.health = HealthRecorder(instruments, settings)

    @contextlib.contextmanager
    def _guard(self, span, stage: str):
        try:
            yield
        except Exception as exc:  # our faults never reach the host application
            self.faults.record(span, stage, exc)

    def generate(self, wrapped, model, args, kwargs):
        try:
            call = GenerateCall.parse(model, wrapped, args, kwargs)
        except Exception as exc:
            self.faults.record(trace.INVALID_SPAN, "request", exc)
            return wrapped(*args, **kwargs)
        span = self._start_span(call)
        profile = None
        with self._guard(span, "profile"):
            profile = self.health.profile_for(model)
        options = CaptureOptions(probes=False)
        with self._guard(span, "options"):
            options = self._capture_options(call, profile)
        session = CaptureSession(model, options)
        started = time.perf_counter()
        with self._guard(span, "attach"):
            session.attach(started)
        live_call, call_args, call_kwargs = None, args, kwargs
        with self._guard(span, "live"):
            live_call = LiveCall(session, profile, call.eos_token_ids, span, self.faults, self.on_step)
            call_args, call_kwargs = live_call.arguments(wrapped, args, kwargs)
        try:
            live = live_call.active() if live_call is not None else contextlib.nullcontext()
            with trace.use_span(span, end_on_exit=False), session.active(), live:
                output = wrapped(*call_args, **call_kwargs)
        except BaseException as exc:
            session.detach()
            self._record_failure(span, call, exc, time.perf_counter() - started)
            raise
        duration = time.perf_counter() - started
        session.detach()
        with self._guard(span, "telemetry"):
            self._record_success(span, call, session, output, duration, profile, live_call)
        span.end()
        return output

    def _start_span(self, call: GenerateCall):
        try:
            attributes, fault = self._request_attributes(call), None
        except Exception as exc:  # the span still starts, with the attributes that cannot fail
            attributes, fault = self._metric_attributes(call), exc
        span = self.tracer.start_span(f"{OPERATION} {call.model_id}", kind=SpanKind.INTERNAL, attributes=attributes)
        if fault is not None:
            self.faults.record(span, "request", fault)
        return span

    def _capture_options(self, call: GenerateCall, profile=None) -> CaptureOptions:
        return CaptureOptions(
            probes=self.settings.probes_enabled,
            attention_stride=self.settings.attention_stride,
            max_steps=call.max_new_tokens or 256,
            num_beams=call.num_beams,
            eos_token_ids=tuple(sorted(call.eos_token_ids)),
            prompt_telemetry=self.settings.capture_mode in ("full", "on_risk"),
            input_batch=1 if call.input_ids is None else int(call.input_ids.shape[0]),
            **self.health.capture_thresholds(profile),
        )

    def _metric_attributes(self, call: GenerateCall, error_type: str | None = None) -> dict:
        values = {
            gen_ai.GEN_AI_OPERATION_NAME: OPERATION,
            gen_ai.GEN_AI_PROVIDER_NAME: PROVIDER,
            gen_ai.GEN_AI_REQUEST_MODEL: call.model_id,
        }
        if error_type:
            values[error_attributes.ERROR_TYPE] = error_type
        return values

    def _request_attributes(self, call: GenerateCall) -> dict:
        values = self._metric_attributes(call)
        values[attrs.CAPTURE_MODE] = self.settings.capture_mode
        optional = {
            gen_ai.GEN_AI_REQUEST_MAX_TOKENS: call.max_new_tokens,
            gen_ai.GEN_AI_REQUEST_TEMPERATURE: call.temperature,
            gen_ai.GEN_AI_REQUEST_TOP_P: call.top_p,
            gen_ai.GEN_AI_REQUEST_TOP_K: call.top_k,
            gen_ai.GEN_AI_REQUEST_CHOICE_COUNT: call.num_return_sequences if call.num_return_sequences > 1 else None,
        }
        values.update({key: value for key, value in optional.items() if value is not None})
        input_tokens = call.input_token_counts()
        if input_tokens:
            values[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] = sum(input_tokens)
        if self.settings.capture_message_content:
            values[gen_ai.GEN_AI_INPUT_MESSAGES] = content.input_messages(call.tokenizer, call.prompt_rows())
        return values

    def _record_failure(self, span, call: GenerateCall, exc: BaseException, duration: float) -> None:
        error_type = type(exc).__qualname__
        with self._guard(span, "telemetry"):
            span.set_attribute(error_attributes.ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            self.instruments.operation_duration.record(duration, self._metric_attributes(call, error_type))
        span.end()

    def _record_success(
        self, span, call: GenerateCall, session: CaptureSession, output, duration: float, profile=None, live_call=None
    ) -> None:
        result = GenerateResult.from_output(call, output)
        if live_call is not None:
            live_call.apply_to_result(result)  # sequences stopped by CoreVitalStoppingCriteria
        metric_attributes = self._metric_attributes(call)
        self.instruments.operation_duration.record(duration, metric_attributes)
        input_tokens = sum(call.input_token_counts())
        output_tokens = sum(result.output_token_counts)
        span.set_attribute(gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS, output_tokens)
        span.set_attribute(gen_ai.GEN_AI_RESPONSE_FINISH_REASONS, result.finish_reasons)
        for token_type, count in (("input", input_tokens), ("output", output_tokens)):
            self.instruments.token_usage.record(count, {**metric_attributes, gen_ai.GEN_AI_TOKEN_TYPE: token_type})
        self._record_timing(session, duration, result, metric_attributes)
        if self.settings.capture_message_content:
            span.set_attribute(
                gen_ai.GEN_AI_OUTPUT_MESSAGES,
                content.output_messages(call.tokenizer, result.completions, result.finish_reasons),
            )
        if session.unavailable_reason:
            span.set_attribute(attrs.CAPTURE_UNAVAILABLE_REASON, session.unavailable_reason)
        summaries = session.finish(result.sequences, call.eos_token_ids)
        if session.fault is not None:
            self.faults.record(span, session.fault[0], session.fault[1])
        if live_call is not None:
            live_call.apply_to_summaries(summaries)
        if summaries is not None:
            with self._guard(span, "analysis"):
                self.health.record(
                    span, call, result, summaries, metric_attributes,
                    profile=profile, prompt_summaries=session.prompt_summaries,
                )
        if live_call is not None:
            live_call.finish(span, summaries, profile, self.settings.risk_threshold, result)

    def _record_timing(self, session: CaptureSession, duration: float, result: GenerateResult, metric_attributes):
        first_token = session.first_token_seconds(duration)
        self.instruments.time_to_first_token.record(first_token, metric_attributes)
        longest = max(result.output_token_counts, default=0)
        if longest > 1:
            per_token = max(duration - first_token, 0.0) / (longest - 1)
            self.instruments.time_per_output_token.record(per_token, metric_attributes)
