"""One settings object. Precedence: keyword arguments of instrument() > env vars > defaults.

A bad keyword argument raises: the caller wrote it and can fix it now. A bad environment
value is logged with the variable's name and the default is kept, so a typo in a deployment
never takes the host application down.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Mapping

from .health_vocabulary import at_risk

_logger = logging.getLogger(__name__)

MODE_OFF, MODE_SUMMARY, MODE_FULL, MODE_ON_RISK = "off", "summary", "full", "on_risk"
CAPTURE_MODES = (MODE_OFF, MODE_SUMMARY, MODE_FULL, MODE_ON_RISK)
DEFAULT_PAYLOAD_MAX_BYTES = 512 * 1024
ENV_PREFIX = "OTEL_INSTRUMENTATION_COREVITAL_"
CAPTURE_MESSAGE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def _parse_capture_mode(raw: str) -> str:
    value = raw.strip().lower()
    if value not in CAPTURE_MODES:
        raise ValueError(f"must be one of {', '.join(CAPTURE_MODES)}")
    return value


def _parse_unit_interval(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be a number between 0 and 1")
    return value


def _parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be a whole number of at least 1")
    return value


# Where prompt and completion content may go. The values are those of opentelemetry-util-genai's
# OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, so one process can configure both; the
# booleans other GenAI instrumentations accept map onto them (true: on the span).
CONTENT_NONE, CONTENT_SPAN, CONTENT_EVENT, CONTENT_SPAN_AND_EVENT = (
    "NO_CONTENT", "SPAN_ONLY", "EVENT_ONLY", "SPAN_AND_EVENT",
)
CONTENT_CAPTURE_MODES = (CONTENT_NONE, CONTENT_SPAN, CONTENT_EVENT, CONTENT_SPAN_AND_EVENT)
_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}
_CONTENT_BOOLEANS = {
    **{spelling: CONTENT_SPAN if value else CONTENT_NONE for spelling, value in _BOOLEANS.items()},
    "": CONTENT_NONE,
}


def _parse_bool(raw) -> bool:
    value = str(raw).strip().lower()
    if value not in _BOOLEANS:
        raise ValueError("must be true or false")
    return _BOOLEANS[value]


def _parse_content_capture(raw) -> str:
    value = str(raw).strip()
    if value.upper() in CONTENT_CAPTURE_MODES:
        return value.upper()
    if value.lower() in _CONTENT_BOOLEANS:
        return _CONTENT_BOOLEANS[value.lower()]
    raise ValueError("must be true, false or one of " + ", ".join(CONTENT_CAPTURE_MODES))


def _parse_profile_overrides(raw) -> dict:
    """A JSON object (env var) or a mapping (keyword) of profile keys, validated against the profile schema."""
    from .profiles import load_profile  # pure data + validation, no torch

    if raw is None:
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"must be a JSON object ({exc})") from None
    if not isinstance(raw, Mapping):
        raise ValueError("must be a JSON object / dict of profile keys to values")
    value = dict(raw)
    load_profile("default", value)  # raises ValueError naming the bad key and the allowed ones
    return value


def _parse_profile_file(raw) -> str | None:
    """Path of a profile file (`corevital calibrate` writes one); it must load now, not at the first call."""
    from .profiles import load_profile_file  # pure data + validation, no torch

    if raw is not None and not isinstance(raw, (str, os.PathLike)):
        raise ValueError("must be the path of a profile file")
    path = "" if raw is None else os.fspath(raw).strip()
    if not path:
        return None
    load_profile_file(path)  # raises ValueError naming the file and the problem
    return path


@dataclass(frozen=True)
class _Option:
    env: str
    parse: Callable[[str], object]
    allowed: str
    parse_kwarg_as_is: bool = False  # keyword values are parsed as given, not as their str()


_OPTIONS: dict[str, _Option] = {
    "capture_mode": _Option(ENV_PREFIX + "CAPTURE_MODE", _parse_capture_mode, " | ".join(CAPTURE_MODES)),
    "risk_threshold": _Option(ENV_PREFIX + "RISK_THRESHOLD", _parse_unit_interval, "a number in [0, 1]"),
    "max_step_events": _Option(ENV_PREFIX + "MAX_STEP_EVENTS", _parse_positive_int, "an integer >= 1"),
    "payload_max_bytes": _Option(ENV_PREFIX + "PAYLOAD_MAX_BYTES", _parse_positive_int, "an integer >= 1"),
    "attention_every": _Option(ENV_PREFIX + "ATTENTION_EVERY", _parse_positive_int, "an integer >= 1"),
    "live_every": _Option(ENV_PREFIX + "LIVE_EVERY", _parse_positive_int, "an integer >= 1"),
    "fused_attention": _Option(ENV_PREFIX + "FUSED_ATTENTION", _parse_bool, "true | false"),
    "capture_message_content": _Option(
        CAPTURE_MESSAGE_CONTENT_ENV, _parse_content_capture, "true | false | " + " | ".join(CONTENT_CAPTURE_MODES)
    ),
    "profile": _Option(
        ENV_PREFIX + "PROFILE", _parse_profile_file, "a profile file written by `corevital calibrate`",
        parse_kwarg_as_is=True,
    ),
    "profile_overrides": _Option(
        ENV_PREFIX + "PROFILE_OVERRIDES",
        _parse_profile_overrides,
        "a JSON object of profile keys (see docs/analysis.md, Profiles)",
        parse_kwarg_as_is=True,
    ),
}


@dataclass(frozen=True)
class Settings:
    """Effective configuration of the instrumentor.

    attention_every: attention statistics are computed on every n-th decoding step in
    `summary` mode (per-layer attention is the one probe whose cost scales with the
    context); `full` and `on_risk` always compute them on every step.
    live_every: the live health that step listeners, `observe()` runs and
    `CoreVitalStoppingCriteria` read is computed after every n-th generated token only;
    the steps between cost what summary mode costs, and a stop comes at most n - 1 tokens
    after the step that called for it.
    fused_attention: on CUDA, the attention statistics of a decoding step's layers are
    reduced by one Triton kernel instead of a few torch operators per layer (the same values
    to float32 rounding); false keeps the torch reduction everywhere.
    """

    capture_mode: str = MODE_SUMMARY
    risk_threshold: float = 0.7
    max_step_events: int = 64
    payload_max_bytes: int = DEFAULT_PAYLOAD_MAX_BYTES
    attention_every: int = 4
    live_every: int = 1
    fused_attention: bool = True
    # one of CONTENT_CAPTURE_MODES; a non-empty string either way, so ask content_on_span /
    # content_on_events / content_captured, never its truthiness
    capture_message_content: str = CONTENT_NONE
    profile: str | None = None
    profile_overrides: dict = field(default_factory=dict)

    @property
    def content_on_span(self) -> bool:
        """Prompt, completion and token text/ids may go on the span and its events."""
        return self.capture_message_content in (CONTENT_SPAN, CONTENT_SPAN_AND_EVENT)

    @property
    def content_on_events(self) -> bool:
        """Prompt and completion may go on log-based GenAI events."""
        return self.capture_message_content in (CONTENT_EVENT, CONTENT_SPAN_AND_EVENT)

    @property
    def content_captured(self) -> bool:
        """Content leaves the process somewhere (a tokenizer is looked for only then)."""
        return self.capture_message_content != CONTENT_NONE

    @property
    def probes_enabled(self) -> bool:
        return self.capture_mode != MODE_OFF

    @property
    def attention_stride(self) -> int:
        return self.attention_every if self.capture_mode == MODE_SUMMARY else 1

    @property
    def full_trace_possible(self) -> bool:
        """`full` and `on_risk`: prompt telemetry is taken and the full-trace payload may ride along."""
        return self.capture_mode in (MODE_FULL, MODE_ON_RISK)

    def full_trace_wanted(self, risk_score: float, critical: bool) -> bool:
        """`full` always; `on_risk` when the risk reaches the threshold or a critical flag is raised."""
        if self.capture_mode == MODE_FULL:
            return True
        return self.capture_mode == MODE_ON_RISK and at_risk(risk_score, critical, self.risk_threshold)

    @classmethod
    def resolve(cls, overrides: dict | None = None, environ: dict | None = None) -> "Settings":
        settings = cls._from_env(os.environ if environ is None else environ)
        return settings.with_overrides(overrides or {})

    @classmethod
    def _from_env(cls, environ) -> "Settings":
        values = {}
        for name, option in _OPTIONS.items():
            raw = environ.get(option.env)
            if raw is None:
                continue
            try:
                values[name] = option.parse(raw)
            except ValueError as exc:
                default = getattr(cls(), name)
                _logger.warning(
                    "Ignoring %s=%r: %s (allowed: %s). Keeping the default %r.",
                    option.env, raw, exc, option.allowed, default,
                )
        return cls(**values)

    def with_overrides(self, overrides: dict) -> "Settings":
        known = {f.name for f in fields(self)}
        values = {}
        for name, value in overrides.items():
            if name not in known:
                raise ValueError(
                    f"Unknown CoreVital setting {name!r}. Allowed settings: {', '.join(sorted(known))}."
                )
            option = _OPTIONS.get(name)
            if option is not None:
                try:
                    if isinstance(value, bool) and option.parse not in (_parse_content_capture, _parse_bool):
                        raise ValueError("a true/false value is not accepted here")
                    value = option.parse(value if option.parse_kwarg_as_is else str(value))
                except ValueError as exc:
                    raise ValueError(
                        f"Invalid value {value!r} for CoreVital setting {name!r}: {exc} (allowed: {option.allowed})."
                    ) from None
            values[name] = value
        return replace(self, **values)
