"""CoreVital attribute and event names (gen_ai.* names come from the semconv package)."""

from ..health_vocabulary import RISK_CRITICAL, RISK_WARNING, flag_attribute

CAPTURE_MODE = "corevital.capture.mode"
ERROR = "corevital.error"
# a user's step listener raised (the exception is also recorded as an `exception` event)
LISTENER_ERROR = "corevital.listener.error"
# why a step listener or CoreVitalStoppingCriteria got no per-step health (beam search, capture off, ...)
LIVE_UNAVAILABLE_REASON = "corevital.live.unavailable_reason"
ATTENTION_UNAVAILABLE_REASON = "corevital.attention.unavailable_reason"
# which model signals the call could not capture and why: none per token under assisted decoding
# (several tokens per forward), logit signals only when the forward is compiled
CAPTURE_UNAVAILABLE_REASON = "corevital.capture.unavailable_reason"

PROFILE_NAME = "corevital.profile.name"
PROFILE_CALIBRATED = "corevital.profile.calibrated"  # fitted on this model's own generations
RISK_SCORE = "corevital.risk.score"
RISK_FACTORS = "corevital.risk.factors"
# one attribute per HealthFlags field (health_vocabulary.flag_attribute); named here for readers
HEALTH_NAN = flag_attribute("nan_detected")
HEALTH_INF = flag_attribute("inf_detected")
HEALTH_ATTENTION_COLLAPSE = flag_attribute("attention_collapse_detected")
HEALTH_REPETITION_LOOP = flag_attribute("repetition_loop_detected")
HEALTH_MID_LAYER_ANOMALY = flag_attribute("mid_layer_anomaly_detected")
HEALTH_HIGH_ENTROPY_STEPS = flag_attribute("high_entropy_steps")
HEALTH_FLAG = "corevital.health.flag"
LAYERS_BLAMED = "corevital.layers.blamed"
EARLY_WARNING_FAILURE_RISK = "corevital.early_warning.failure_risk"
EARLY_WARNING_SIGNALS = "corevital.early_warning.signals"
LOGITS_ENTROPY_MEAN = "corevital.logits.entropy.mean"
LOGITS_ENTROPY_MAX = "corevital.logits.entropy.max"
LOGITS_SURPRISAL_MEAN = "corevital.logits.surprisal.mean"
LOGITS_MARGIN_MEAN = "corevital.logits.margin.mean"
PROMPT_HASH = "corevital.prompt.hash"
FINGERPRINT = "corevital.fingerprint"
NARRATIVE = "corevital.narrative"
LANGFUSE_LEVEL = "langfuse.observation.level"
LANGFUSE_STATUS_MESSAGE = "langfuse.observation.status_message"

STEP_EVENT = "corevital.step"
SEQUENCE_EVENT = "corevital.sequence"
INTERVENTION_EVENT = "corevital.intervention"
EVALUATION_EVENT = "gen_ai.evaluation.result"
EVALUATION_NAME = "corevital.risk"

# Span attributes of the full-trace payload decision (full / on_risk modes).
PAYLOAD_ATTACHED = "corevital.payload.attached"

# Langfuse observation levels (langfuse.observation.level) by risk label.
LANGFUSE_LEVEL_OF_LABEL = {RISK_WARNING: "WARNING", RISK_CRITICAL: "ERROR"}

# corevital.step event attributes.
STEP_INDEX = "corevital.step.index"
STEP_SEQUENCE = "corevital.step.sequence"
STEP_TOKEN_ID = "corevital.step.token_id"
STEP_TOKEN_TEXT = "corevital.step.token"
STEP_ENTROPY = "corevital.step.entropy"
STEP_SURPRISAL = "corevital.step.surprisal"
STEP_MARGIN = "corevital.step.margin"
STEP_TOPK_MASS = "corevital.step.topk_mass"
STEP_FLAGGED = "corevital.step.flagged"

# corevital.sequence event attributes.
SEQUENCE_INDEX = "corevital.sequence.index"
SEQUENCE_RISK_SCORE = "corevital.sequence.risk.score"
SEQUENCE_RISK_LABEL = "corevital.sequence.risk.label"
SEQUENCE_FLAGS = "corevital.sequence.health.flags"
SEQUENCE_OUTPUT_TOKENS = "corevital.sequence.output_tokens"
SEQUENCE_FINISH_REASON = "corevital.sequence.finish_reason"

# corevital.intervention event attributes.
INTERVENTION_STEP = "corevital.intervention.step"
INTERVENTION_REASON = "corevital.intervention.reason"
INTERVENTION_SEQUENCE = "corevital.intervention.sequence"

# The risk label (healthy | warning | critical), also the evaluation event's score label, on
# the span so that trace-only backends can filter on it.
RISK_LABEL = "corevital.risk.label"

# OpenInference attributes, which Arize Phoenix reads for its Input/Output columns, span kind
# and metadata filters (openinference-semantic-conventions; Phoenix 20.x).
OPENINFERENCE_SPAN_KIND = "openinference.span.kind"
OPENINFERENCE_LLM = "LLM"
INPUT_VALUE = "input.value"
INPUT_MIME_TYPE = "input.mime_type"
OUTPUT_VALUE = "output.value"
OUTPUT_MIME_TYPE = "output.mime_type"
MIME_TEXT = "text/plain"
MIME_JSON = "application/json"
METADATA = "metadata"  # a JSON object as a string: the risk headline

# Log-based GenAI event with one returned sequence's messages (semconv v1.41.1,
# gen-ai-events.md, "Event: gen_ai.client.inference.operation.details").
OPERATION_DETAILS_EVENT = "gen_ai.client.inference.operation.details"
