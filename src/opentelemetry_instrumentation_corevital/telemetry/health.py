"""CoreVital health on the span, in span events and in metrics.

One `record` per successful generate call whose summaries were captured (every capture mode
except `off`):

- span attributes of the telemetry contract, computed by `analysis.analyze`; span-level
  values aggregate a batch (max risk, any flag, union of blamed layers); the fingerprint and
  the narrative are the worst sequence's;
- `corevital.step` events for the worst sequence's steps, at most `max_step_events`
  (first, last and flagged steps always kept, see `events.sample_steps`), each stamped with
  the time its token existed, so a backend's event list shows the run's timing;
- `corevital.sequence` events, one per returned sequence, when there is more than one (with
  that sequence's messages when content capture on spans is on);
- the full-trace payload events in `full` mode, or in `on_risk` mode when the run is risky;
- `gen_ai.evaluation.result` as a log-based event tied to the span (the semconv's events are
  log records); the same risk stays in the span's attributes for trace-only backends, and in
  `metadata`, the JSON headline Arize Phoenix shows and filters on;
- metrics `corevital.risk.score` (one record per call), `corevital.logits.entropy` (one per
  valid generated token) and `corevital.health.flags` (+1 per raised flag).

Any exception propagates to the handler's guard, which records `corevital.error`; the caller
never sees it. No torch here.
"""

from __future__ import annotations

import json
import time

import numpy as np

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from ..analysis import RunAnalysis, analyze, prompt_hash
from ..health_vocabulary import BOOLEAN_FLAGS, COUNT_FLAGS, flag_attribute
from ..profiles import Profile
from ..profiles.resolver import ProfileResolver, capture_thresholds
from ..summaries import RunSummaries
from . import attributes as attrs
from . import content, events, payload


class HealthRecorder:
    def __init__(self, instruments, settings, event_logger=None):
        self.instruments = instruments
        self.settings = settings
        self.event_logger = event_logger  # OTel Logs API logger; None: no log-based events
        self.profiles = ProfileResolver(settings.profile, settings.profile_overrides)

    # -- profiles (the handler asks the recorder, which owns the resolver) ----------------------

    def profile(self, model_type: str | None = None) -> Profile:
        return self.profiles.for_model_type(model_type)

    def profile_for(self, model) -> Profile:
        return self.profiles.for_model(model)

    def capture_thresholds(self, profile: Profile | None = None) -> dict:
        return capture_thresholds(profile or self.profile())

    # -- one generate call ---------------------------------------------------------------------

    def analysis_of(self, summaries: RunSummaries, profile: Profile | None = None) -> RunAnalysis:
        """The call's analysis under `profile` (the model type's profile when none was resolved);
        the handler asks once per call and hands it to `record` and to live callers."""
        return analyze(summaries, profile or self.profile(summaries.model_type))

    def record(
        self,
        span,
        call,
        result,
        summaries: RunSummaries,
        metric_attributes: dict,
        profile: Profile | None = None,
        prompt_summaries=None,
        conversations=None,
        step_times_ns=(),
        analysis: RunAnalysis | None = None,
    ) -> None:
        """Health telemetry of one call; `analysis`: the call's analysis when already computed."""
        entropy = summaries.logit("entropy")[summaries.valid]
        for value in entropy[np.isfinite(entropy) & (entropy >= 0)].tolist():  # the SDK refuses negatives
            self.instruments.logits_entropy.record(value, metric_attributes)
        if summaries.attention_unavailable_reason:
            span.set_attribute(attrs.ATTENTION_UNAVAILABLE_REASON, summaries.attention_unavailable_reason)

        profile = profile or self.profile(summaries.model_type)
        if analysis is None:
            analysis = self.analysis_of(summaries, profile)
        aggregate = analysis.aggregate

        risk = events.finite_float(aggregate.risk_score)
        if risk is not None:
            self.instruments.risk_score.record(risk, metric_attributes)
        for flag in aggregate.flags.raised():
            self.instruments.health_flags.add(1, {**metric_attributes, attrs.HEALTH_FLAG: flag})

        if not span.is_recording():
            return
        span.set_attributes(span_attributes(analysis, call, summaries))
        span.set_attributes({attrs.PROFILE_NAME: profile.name, attrs.PROFILE_CALIBRATED: profile.calibrated})
        for name, values in self._step_events(call, summaries, analysis):
            step = values[attrs.STEP_INDEX]
            span.add_event(name, values, timestamp=step_times_ns[step] if step < len(step_times_ns) else None)
        if len(analysis.sequences) > 1:
            for name, values in sequence_events(analysis, result, conversations):
                span.add_event(name, values)
        try:
            self._attach_payload(span, summaries, prompt_summaries, analysis)
        finally:
            self._emit_evaluation(span, analysis)

    def _emit_evaluation(self, span, analysis: RunAnalysis) -> None:
        if self.event_logger is None:
            return
        worst = _worst(analysis)
        name, values = events.evaluation_event(
            score=analysis.aggregate.risk_score,
            label=analysis.aggregate.label,
            explanation=worst.narrative if worst is not None else "",
        )
        # the span's context ties the log record to it (trace and span ids on the record)
        self.event_logger.emit(event_name=name, attributes=values, context=trace.set_span_in_context(span))

    # -- pieces ----------------------------------------------------------------------------------

    def _step_events(self, call, summaries: RunSummaries, analysis: RunAnalysis) -> list[events.Event]:
        """Step events of the worst sequence (the one that set the span's risk)."""
        worst = _worst(analysis)
        if worst is None or summaries.num_steps == 0:
            return []
        i = worst.index
        valid_steps = np.flatnonzero(summaries.valid[i]).tolist()
        chosen = events.sample_steps(valid_steps, worst.flagged_steps, self.settings.max_step_events)
        flagged = set(worst.flagged_steps)
        with_tokens = self.settings.content_on_span  # a token id decodes to the completion: private by default
        tokenizer = call.tokenizer if with_tokens else None
        stats = {name: summaries.logit(name)[i] for name in ("entropy", "surprisal", "margin", "topk_mass")}
        built = []
        for step in chosen:
            token_id = int(summaries.token_ids[i, step])
            built.append(
                events.step_event(
                    step=step,
                    sequence=i,
                    token_id=token_id if with_tokens else None,
                    entropy=stats["entropy"][step],
                    surprisal=stats["surprisal"][step],
                    margin=stats["margin"][step],
                    topk_mass=stats["topk_mass"][step],
                    flagged=step in flagged,
                    token_text=_token_text(tokenizer, token_id),
                )
            )
        return built

    def payload_wanted(self, analysis: RunAnalysis) -> bool:
        aggregate = analysis.aggregate
        return self.settings.full_trace_wanted(aggregate.risk_score, aggregate.flags.critical)

    def _attach_payload(self, span, summaries, prompt_summaries, analysis: RunAnalysis) -> None:
        if not self.settings.full_trace_possible:
            return
        wanted = self.payload_wanted(analysis)
        span.set_attribute(attrs.PAYLOAD_ATTACHED, wanted)
        if not wanted:
            return
        try:
            encoded, info = payload.payload_events(
                summaries, prompt_summaries, analysis, self.settings.payload_max_bytes,
                token_ids=self.settings.content_on_span,
            )
        except Exception:
            span.set_attribute(attrs.PAYLOAD_ATTACHED, False)
            raise
        stamp = time.time_ns()  # one time for all: backends list the payload as one block after the steps
        for name, values in encoded:
            span.add_event(name, values, timestamp=stamp)
        if info:
            span.set_attributes(dict(info))


def _worst(analysis: RunAnalysis):
    index = analysis.aggregate.worst_sequence
    if index is None or not analysis.sequences:
        return None
    return analysis.sequences[index]


def _token_text(tokenizer, token_id: int) -> str | None:
    if tokenizer is None:
        return None
    try:
        text = tokenizer.decode([token_id])
    except Exception:  # an odd tokenizer loses the text, never the event
        return None
    return text if isinstance(text, str) else None


def _observed(summaries: RunSummaries, stat: str) -> bool:
    return bool(np.isfinite(summaries.logit(stat)[summaries.valid]).any())


def span_attributes(analysis: RunAnalysis, call, summaries: RunSummaries) -> dict:
    """The contract's span attributes, all OTel-valid; non-finite numbers are left out."""
    aggregate = analysis.aggregate
    flags = aggregate.flags
    values: dict = {
        attrs.RISK_FACTORS: [str(f) for f in aggregate.risk_factors],
        **{flag_attribute(name): bool(getattr(flags, name)) for name in BOOLEAN_FLAGS},
        **{flag_attribute(name): int(getattr(flags, name)) for name in COUNT_FLAGS},
        attrs.LAYERS_BLAMED: [int(layer) for layer in aggregate.blamed_layers],
        attrs.EARLY_WARNING_SIGNALS: [str(s) for s in aggregate.warning_signals],
    }
    events.put_float(values, attrs.RISK_SCORE, aggregate.risk_score)
    events.put_float(values, attrs.EARLY_WARNING_FAILURE_RISK, aggregate.failure_risk)
    # Analysis reports 0.0 when a statistic has no finite value at any valid step (e.g. every
    # logit was NaN); the span leaves such a statistic out instead of claiming 0 bits.
    if _observed(summaries, "entropy"):
        events.put_float(values, attrs.LOGITS_ENTROPY_MEAN, aggregate.entropy_mean)
        events.put_float(values, attrs.LOGITS_ENTROPY_MAX, aggregate.entropy_max)
    if _observed(summaries, "surprisal"):
        events.put_float(values, attrs.LOGITS_SURPRISAL_MEAN, aggregate.surprisal_mean)
    if _observed(summaries, "margin"):
        events.put_float(values, attrs.LOGITS_MARGIN_MEAN, aggregate.margin_mean)
    rows = call.prompt_rows()
    if rows:
        values[attrs.PROMPT_HASH] = prompt_hash([int(t) for t in rows[0]], call.model_id)
    worst = _worst(analysis)
    if worst is not None:
        fingerprint = [events.finite_float(v) for v in worst.fingerprint]
        values[attrs.FINGERPRINT] = [0.0 if v is None else v for v in fingerprint]
        if worst.narrative:
            values[attrs.NARRATIVE] = str(worst.narrative)
    values[attrs.RISK_LABEL] = str(aggregate.label)
    values[attrs.METADATA] = risk_headline(values)
    level = attrs.LANGFUSE_LEVEL_OF_LABEL.get(aggregate.label)
    if level is not None:
        values[attrs.LANGFUSE_LEVEL] = level
        if worst is not None and worst.narrative:
            values[attrs.LANGFUSE_STATUS_MESSAGE] = str(worst.narrative)
    return values


def risk_headline(values: dict) -> str:
    """The `metadata` JSON: score, label, factors and raised flags. Its keys have no dots, which
    Phoenix would split into nested keys; it filters on `metadata['risk_label'] == 'critical'`."""
    headline = {
        "risk_score": values.get(attrs.RISK_SCORE),
        "risk_label": values.get(attrs.RISK_LABEL),
        "risk_factors": list(values.get(attrs.RISK_FACTORS, [])),
        "health_flags": [name for name in BOOLEAN_FLAGS if values.get(flag_attribute(name))],
    }
    return json.dumps(headline)


def sequence_events(analysis: RunAnalysis, result, conversations=None) -> list[events.Event]:
    counts = list(getattr(result, "output_token_counts", []) or [])
    reasons = list(getattr(result, "finish_reasons", []) or [])
    conversations = list(conversations or [])
    built = []
    for sequence in analysis.sequences:
        name, values = events.sequence_event(
            index=sequence.index,
            risk_score=sequence.risk_score,
            label=sequence.label,
            flags=sequence.flags.raised(),
            output_tokens=counts[sequence.index] if sequence.index < len(counts) else None,
            finish_reason=reasons[sequence.index] if sequence.index < len(reasons) else None,
        )
        if sequence.index < len(conversations):  # content capture on spans: this sequence's own messages
            inputs, output = conversations[sequence.index]
            values[gen_ai.GEN_AI_INPUT_MESSAGES] = content.on_span(inputs)
            values[gen_ai.GEN_AI_OUTPUT_MESSAGES] = content.on_span([output])
        built.append((name, values))
    return built
