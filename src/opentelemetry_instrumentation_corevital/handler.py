"""One handler per instrumentor: turns each generate call into a span, events and metrics."""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from contextvars import ContextVar

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.trace import SpanKind, Status, StatusCode

from .capture.inputs import call_prompt_ids
from .capture.session import CaptureOptions, CaptureSession
from .config import Settings
from .generate_call import GenerateCall, GenerateResult
from .live.call import NO_LIVE_CALL, LiveCall
from .telemetry import attributes as attrs
from .telemetry import content
from .telemetry.health import HealthRecorder
from .telemetry.metrics import Instruments
from .tokenizer_source import TokenizerSource

_logger = logging.getLogger(__name__)
# ids of the models drafting for the generate calls running in this context: their own
# generate calls are part of the user's call (assisted decoding), not calls of their own
_DRAFTING: ContextVar[frozenset[int]] = ContextVar("corevital_drafting_models", default=frozenset())
SPECULATIVE_REASON = (
    "assisted decoding and prompt lookup accept several tokens per forward; per-token health is not captured"
)
# gen-ai-spans.md (semconv v1.41.1): `chat` for a chat completion (a prompt rendered from chat
# messages by the tokenizer's chat template), `text_completion` otherwise (GenerateCall's default)
CHAT = gen_ai.GenAiOperationNameValues.CHAT.value
PROVIDER = "huggingface"


class FaultLog:
    """Logs each internal fault once per (stage, exception type), however often it recurs, and
    names a span's first fault on it: later faults of a call are often its consequences."""

    def __init__(self):
        self._seen: set[tuple[str, str]] = set()
        self._spans_with_fault: weakref.WeakSet = weakref.WeakSet()

    def record(self, span, stage: str, exc: BaseException) -> None:
        if span.is_recording() and self._first_on(span):
            span.set_attribute(attrs.ERROR, f"{stage}: {type(exc).__name__}: {exc}")
        key = (stage, type(exc).__name__)
        if key not in self._seen:
            self._seen.add(key)
            _logger.warning("CoreVital fault in %s; generation continues", stage, exc_info=exc)

    def _first_on(self, span) -> bool:
        try:
            if span in self._spans_with_fault:
                return False
            self._spans_with_fault.add(span)
        except TypeError:  # a span type that takes no weak reference: each fault replaces the last
            pass
        return True


class GenerationHandler:
    def __init__(
        self, tracer: trace.Tracer, instruments: Instruments, settings: Settings, on_step=None,
        event_logger=None, tokenizer=None,
    ):
        self.tracer = tracer
        self.on_step = on_step  # instrument(on_step=...): called with every call's StepSummary
        self.instruments = instruments
        self.settings = settings
        self.faults = FaultLog()
        self.event_logger = event_logger  # OTel Logs API logger for the log-based GenAI events
        self.tokenizers = TokenizerSource(tokenizer)
        self.health = HealthRecorder(instruments, settings, event_logger)

    @contextlib.contextmanager
    def _guard(self, span, stage: str):
        try:
            yield
        except Exception as exc:  # our faults never reach the host application
            self.faults.record(span, stage, exc)

    def generate(self, wrapped, model, args, kwargs):
        if id(model) in _DRAFTING.get():
            return wrapped(*args, **kwargs)
        try:
            call = GenerateCall.parse(model, wrapped, args, kwargs)
        except Exception as exc:
            self.faults.record(trace.INVALID_SPAN, "request", exc)
            return wrapped(*args, **kwargs)
        drafting = _DRAFTING.set(_DRAFTING.get() | {id(m) for m in call.draft_models})
        try:
            return self._traced(wrapped, model, call, args, kwargs)
        finally:
            _DRAFTING.reset(drafting)

    def _traced(self, wrapped, model, call: GenerateCall, args, kwargs):
        content_fault = None
        try:
            self._describe_content(call, model)
        except Exception as exc:  # the call stays a text completion without text
            content_fault = exc
        span = self._start_span(call)
        if content_fault is not None:
            self.faults.record(span, "content", content_fault)
        profile = None
        with self._guard(span, "profile"):
            profile = self.health.profile_for(model)
        options = CaptureOptions(probes=False)
        with self._guard(span, "options"):
            options = self._capture_options(call, profile)
        session = CaptureSession(model, options)
        live_call, call_args, call_kwargs = NO_LIVE_CALL, args, kwargs
        with self._guard(span, "live"):
            live_call = LiveCall(session, profile, call.eos_token_ids, span, self.faults, self.on_step,
                                 every=self.settings.live_every, generate_kwargs=kwargs)
            call_args, call_kwargs = live_call.arguments(wrapped, args, kwargs)
        started = time.perf_counter()
        try:
            with session.attached(started):
                with (
                    trace.use_span(span, end_on_exit=False),
                    session.active(),
                    live_call.active(),
                    call_prompt_ids(call.input_ids),
                ):
                    output = wrapped(*call_args, **call_kwargs)
                duration = time.perf_counter() - started
                step_times_ns = session.clock.token_times_ns(time.time_ns())
        except BaseException as exc:
            if session.fault is not None:
                self.faults.record(span, *session.fault)
            self._record_failure(span, call, exc, time.perf_counter() - started)
            raise
        # metrics recorded while the span is current carry it as their exemplar
        with self._guard(span, "telemetry"), trace.use_span(
            span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        ):
            self._record_success(span, call, session, output, duration, profile, live_call, step_times_ns)
        self._end(span)
        return output

    def _end(self, span) -> None:
        # a span processor or exporter that raises on end is not the caller's problem either
        with self._guard(span, "telemetry"):
            span.end()

    def _start_span(self, call: GenerateCall):
        try:
            attributes, fault = self._request_attributes(call), None
        except Exception as exc:  # the span still starts, with the attributes that cannot fail
            attributes, fault = self._metric_attributes(call), exc
        span = self.tracer.start_span(f"{call.operation} {call.model_id}", kind=SpanKind.INTERNAL, attributes=attributes)
        if fault is not None:
            self.faults.record(span, "request", fault)
        return span

    def _capture_options(self, call: GenerateCall, profile=None) -> CaptureOptions:
        return CaptureOptions(
            probes=self.settings.probes_enabled and not call.speculative,
            attention_stride=self.settings.attention_stride,
            fused_attention=self.settings.fused_attention,
            max_steps=call.max_new_tokens or 256,
            num_beams=call.num_beams,
            eos_token_ids=tuple(sorted(call.eos_token_ids)),
            prompt_telemetry=self.settings.full_trace_possible,
            input_batch=1 if call.input_ids is None else int(call.input_ids.shape[0]),
            **self.health.capture_thresholds(profile),
        )

    def _describe_content(self, call: GenerateCall, model) -> None:
        """The call's tokenizer, whether its prompt is a chat, and (content capture only) its messages."""
        call.tokenizer = self.tokenizers.find(model, call.tokenizer)
        rows = call.prompt_rows()
        if rows and content.is_chat(call.tokenizer, rows[0]):
            call.operation = CHAT
        if self.settings.content_captured:
            call.input_messages = [content.input_messages(call.tokenizer, row) for row in rows]

    def _metric_attributes(self, call: GenerateCall, error_type: str | None = None) -> dict:
        values = {
            gen_ai.GEN_AI_OPERATION_NAME: call.operation,
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
            gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES: list(call.stop_sequences) or None,
            # gen-ai-spans.md: set "if and only if the request is streaming" (a streamer was given)
            gen_ai.GEN_AI_REQUEST_STREAM: True if call.streaming else None,
        }
        values.update({key: value for key, value in optional.items() if value is not None})
        values[attrs.OPENINFERENCE_SPAN_KIND] = attrs.OPENINFERENCE_LLM
        input_tokens = call.input_token_counts()
        if input_tokens:
            values[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] = sum(input_tokens)
        if self.settings.content_on_span and call.input_messages:
            first = call.input_messages[0]
            # one conversation per span: a batch's other prompts go on their corevital.sequence events
            values[gen_ai.GEN_AI_INPUT_MESSAGES] = content.on_span(first)
            chat = call.operation == CHAT
            values[attrs.INPUT_VALUE] = content.on_span(first) if chat else content.plain_text(first)
            values[attrs.INPUT_MIME_TYPE] = attrs.MIME_JSON if chat else attrs.MIME_TEXT
        return values

    def _record_failure(self, span, call: GenerateCall, exc: BaseException, duration: float) -> None:
        error_type = type(exc).__qualname__
        with self._guard(span, "telemetry"), trace.use_span(
            span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        ):
            span.set_attribute(error_attributes.ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            self.instruments.operation_duration.record(duration, self._metric_attributes(call, error_type))
            self.instruments.server_request_duration.record(duration, self._metric_attributes(call, error_type))
        self._end(span)

    def _record_success(
        self, span, call: GenerateCall, session: CaptureSession, output, duration: float, profile=None,
        live_call=NO_LIVE_CALL, step_times_ns=(),
    ) -> None:
        result = GenerateResult.from_output(call, output)
        live_call.apply_to_result(result)  # sequences stopped by CoreVitalStoppingCriteria
        metric_attributes = self._metric_attributes(call)
        self.instruments.operation_duration.record(duration, metric_attributes)
        self.instruments.server_request_duration.record(duration, metric_attributes)
        input_counts = call.input_token_counts()  # empty when the input is not tokens (audio features)
        output_tokens = sum(result.output_token_counts)
        span.set_attribute(gen_ai.GEN_AI_RESPONSE_MODEL, call.model_id)  # in-process: the model that ran
        span.set_attribute(gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS, output_tokens)
        span.set_attribute(gen_ai.GEN_AI_RESPONSE_FINISH_REASONS, result.finish_reasons)
        usage = [("input", sum(input_counts))] if input_counts else []
        for token_type, count in usage + [("output", output_tokens)]:
            self.instruments.token_usage.record(count, {**metric_attributes, gen_ai.GEN_AI_TOKEN_TYPE: token_type})
        self._record_timing(span, call, session, duration, output_tokens, metric_attributes)
        conversations = self._record_content(span, call, result)
        unavailable = SPECULATIVE_REASON if call.speculative and self.settings.probes_enabled else session.unavailable_reason
        if unavailable:
            span.set_attribute(attrs.CAPTURE_UNAVAILABLE_REASON, unavailable)
        summaries = session.finish(result.sequences, call.eos_token_ids, live_call.stops())
        if session.fault is not None:
            self.faults.record(span, *session.fault)
        analysis = None
        if summaries is not None:
            with self._guard(span, "analysis"):
                analysis = self.health.analysis_of(summaries, profile)  # once: the span and observe() share it
                self.health.record(
                    span, call, result, summaries, metric_attributes,
                    profile=profile, prompt_summaries=session.prompt_summaries,
                    conversations=conversations if self.settings.content_on_span else None,
                    step_times_ns=step_times_ns, analysis=analysis,
                )
        live_call.finish(span, analysis, self.settings.risk_threshold, result)

    def _record_timing(self, span, call, session: CaptureSession, duration: float, output_tokens: int, metric_attributes):
        first_token = session.first_token_seconds(duration)
        self.instruments.time_to_first_token.record(first_token, metric_attributes)
        if call.streaming:  # the streamer receives the first new token when it exists
            span.set_attribute(gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, first_token)
        # gen-ai-metrics.md, gen_ai.server.time_per_output_token: "time per output token generated
        # after the first token", i.e. the decode time over the output tokens after the first
        if output_tokens > 1:
            per_token = max(duration - first_token, 0.0) / (output_tokens - 1)
            self.instruments.time_per_output_token.record(per_token, metric_attributes)

    def _record_content(self, span, call: GenerateCall, result: GenerateResult) -> list[tuple[list, dict]]:
        """Each returned sequence's (input messages, output message), put where content capture allows."""
        if not self.settings.content_captured:
            return []
        prompts = call.input_messages
        # generate returns each prompt's sequences next to each other (num_return_sequences per prompt)
        per_prompt = max(len(result.completions) // max(len(prompts), 1), 1)
        rows = [index // per_prompt for index in range(len(result.completions))]
        conversations = [
            (prompts[row] if row < len(prompts) else [], content.output_message(call.tokenizer, ids, reason))
            for row, ids, reason in zip(rows, result.completions, result.finish_reasons)
        ]
        if self.settings.content_on_span and conversations:
            # the span holds the first prompt's conversation: its choices as the output messages
            first = [output for row, (_, output) in zip(rows, conversations) if row == 0]
            span.set_attribute(gen_ai.GEN_AI_OUTPUT_MESSAGES, content.on_span(first))
            span.set_attribute(
                attrs.OUTPUT_VALUE, content.plain_text(first) if len(first) == 1 else content.on_span(first)
            )
            span.set_attribute(attrs.OUTPUT_MIME_TYPE, attrs.MIME_TEXT if len(first) == 1 else attrs.MIME_JSON)
        if self.settings.content_on_events and self.event_logger is not None:
            for inputs, output in conversations:
                self.event_logger.emit(
                    event_name=attrs.OPERATION_DETAILS_EVENT,
                    context=trace.set_span_in_context(span),
                    attributes={
                        gen_ai.GEN_AI_OPERATION_NAME: call.operation,
                        gen_ai.GEN_AI_REQUEST_MODEL: call.model_id,
                        # gen-ai-events.md: structured form on events
                        gen_ai.GEN_AI_INPUT_MESSAGES: inputs,
                        gen_ai.GEN_AI_OUTPUT_MESSAGES: [output],
                    },
                )
        return conversations
