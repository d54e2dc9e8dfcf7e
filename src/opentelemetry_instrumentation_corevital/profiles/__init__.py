"""Per-architecture thresholds and risk-model weights, shipped as JSON package data.

`default.json` holds every key and is safe by construction on a model never seen: every
threshold is relative to the model's own behaviour within the call (its own layers, heads,
steps and token periodicity), and its hand-set risk model can reach `critical` only on a
loop, a NaN/Inf, or an unsure answer during which the middle layer's state barely moves
(`hidden_norm_spread` over the answer's first steps and `hidden_norm_spread_call` over the whole
call, spreads of logs, well below their references). An architecture file
(`gpt2.json`, `llama.json`, ...) holds only the keys that differ for that architecture and is
merged over the default. A profile file written by `corevital calibrate` (`load_profile_file`)
is merged over the default instead of an architecture file. Caller overrides are merged
last. Every value is validated, whichever layer it came from. `calibrated` says whether the
risk model was fitted on the model's own generations (a file written by `corevital calibrate`;
no shipped profile is).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from functools import lru_cache
from importlib import resources
from typing import Mapping

ARCHITECTURES = ("gpt2", "llama", "mistral", "qwen2", "t5", "bart")

# model_type values of close relatives that behave like one of the shipped architectures.
_RELATIVES = {
    "mixtral": "mistral",
    "qwen2_moe": "qwen2",
    "qwen3": "qwen2",
    "qwen3_moe": "qwen2",
    "mt5": "t5",
    "umt5": "t5",
    "mbart": "bart",
}

RISK_FEATURE_NAMES = (
    "entropy_mean",
    "entropy_max",
    "surprisal_mean",
    "high_entropy_fraction",
    "low_margin_fraction",
    "low_entropy_run_fraction",
    "repetition_loop",
    "repetition_fraction",
    "mid_layer_anomaly",
    "attention_collapse_fraction",
    "entropy_rise",
    "confidence_mean",
    "answer_uncertainty",
    "chosen_probability_mean",
    "confident_run_fraction",
    "hidden_norm_spread",
    "hidden_norm_spread_call",
)

WARNING_SIGNAL_NAMES = (
    "entropy_rising",
    "margin_collapsing",
    "repetition_building",
    "surprisal_spike",
    "hidden_norm_growth",
)


@dataclass(frozen=True)
class RiskModel:
    """Logistic model: score = sigmoid(bias + sum(weights * features)).

    `reference` holds typical feature values of a healthy run; it explains a score (a factor
    is a feature whose weight * (value - reference) is large) and stands in for a feature that
    could not be measured, which so moves the score neither way.
    """

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    reference: tuple[float, ...]


@dataclass(frozen=True)
class WarningWeights:
    """How much each early-warning signal adds to failure_risk (combined as independent odds)."""

    entropy_rising: float
    margin_collapsing: float
    repetition_building: float
    surprisal_spike: float
    hidden_norm_growth: float

    def of(self, signal: str) -> float:
        return float(getattr(self, signal))


@dataclass(frozen=True)
class Profile:
    name: str
    calibrated: bool
    high_entropy_bits: float
    low_entropy_bits: float
    low_entropy_min_run: int
    low_margin: float
    confident_probability: float
    answer_steps: int
    repetition_cosine: float
    repetition_relative_cosine: float
    repetition_min_steps: int
    repetition_max_period: int
    l2_explosion_multiplier: float
    collapsed_head_entropy_bits: float
    focused_head_concentration: float
    blame_collapse_excess_fraction: float
    collapse_persistence: float
    risk_threshold_warning: float
    risk_threshold_critical: float
    risk_factor_min_logit: float
    early_warning_window: int
    entropy_rise_bits: float
    margin_collapse_ratio: float
    trend_spread: float
    surprisal_spike_bits: float
    norm_growth_ratio: float
    early_warning_weights: WarningWeights
    risk_model: RiskModel


@dataclass(frozen=True)
class _Bounds:
    kind: type
    low: float
    high: float
    low_open: bool = False

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        return f"{what} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"

    def validate(self, key: str, value: object) -> int | float:
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind is int and not isinstance(value, int):
            is_number = False
        if not is_number or not math.isfinite(value):
            raise ValueError(f"profile key {key!r} must be {self.describe()}, got {value!r}")
        too_low = value <= self.low if self.low_open else value < self.low
        if too_low or value > self.high:
            raise ValueError(f"profile key {key!r} must be {self.describe()}, got {value!r}")
        return self.kind(value)


_BIG = 1e6
_SCALARS: dict[str, _Bounds] = {
    "high_entropy_bits": _Bounds(float, 0, 32, low_open=True),
    "low_entropy_bits": _Bounds(float, 0, 32),
    "low_entropy_min_run": _Bounds(int, 1, _BIG),
    "low_margin": _Bounds(float, 0, 1),
    "repetition_cosine": _Bounds(float, 0, 1, low_open=True),
    "repetition_relative_cosine": _Bounds(float, 0, 1),
    "confident_probability": _Bounds(float, 0, 1, low_open=True),
    "answer_steps": _Bounds(int, 1, _BIG),
    "repetition_min_steps": _Bounds(int, 1, _BIG),
    "repetition_max_period": _Bounds(int, 1, 4096),
    "l2_explosion_multiplier": _Bounds(float, 1, _BIG, low_open=True),
    "collapsed_head_entropy_bits": _Bounds(float, 0, 32),
    "focused_head_concentration": _Bounds(float, 0, 1),
    "blame_collapse_excess_fraction": _Bounds(float, 0, 1),
    "collapse_persistence": _Bounds(float, 0, 1, low_open=True),
    "risk_threshold_warning": _Bounds(float, 0, 1),
    "risk_threshold_critical": _Bounds(float, 0, 1),
    "risk_factor_min_logit": _Bounds(float, 0, 100),
    "early_warning_window": _Bounds(int, 2, _BIG),
    "entropy_rise_bits": _Bounds(float, 0, 32, low_open=True),
    "margin_collapse_ratio": _Bounds(float, 0, 1, low_open=True),
    "trend_spread": _Bounds(float, 0, 100),
    "surprisal_spike_bits": _Bounds(float, 0, 1000, low_open=True),
    "norm_growth_ratio": _Bounds(float, 1, _BIG, low_open=True),
}
_WEIGHT_BOUNDS = _Bounds(float, 0, 1)
_RISK_MODEL_KEYS = ("features", "weights", "bias", "reference")
_NESTED = ("early_warning_weights", "risk_model")
PROFILE_KEYS = tuple(_SCALARS) + _NESTED + ("calibrated",)
# Keys of a profile file that describe it rather than set a threshold.
PROFILE_FILE_META = ("name", "model_type", "calibration")


def profile_name(model_type: str) -> str:
    """The profile file used for a `model.config.model_type`; `default` when none fits."""
    key = (model_type or "").strip().lower().replace("-", "_")
    key = _RELATIVES.get(key, key)
    return key if key in ARCHITECTURES else "default"


def load_profile(model_type: str = "default", overrides: Mapping[str, object] | None = None) -> Profile:
    name = profile_name(model_type)
    layers = [_read_json("default")]
    if name != "default":
        layers.append(_read_json(name))
    return _merge_and_build(name, layers, overrides)


def load_profile_file(path: str | Path, overrides: Mapping[str, object] | None = None) -> Profile:
    """A profile file (as `corevital calibrate` writes it) merged over the default profile.

    Raises ValueError with one line naming the file, the problem and the fix.
    """
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"profile file {path}: not found; write one with `corevital calibrate`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"profile file {path}: cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"profile file {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"profile file {path}: must hold a JSON object of profile keys")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise ValueError(f"profile file {path}: 'name' must be a non-empty string")
    keys = {key: value for key, value in data.items() if key not in PROFILE_FILE_META}
    try:
        return _merge_and_build(name, [_read_json("default"), keys], overrides)
    except ValueError as exc:
        raise ValueError(f"profile file {path}: {exc}") from None


def _merge_and_build(name: str, layers: list, overrides: Mapping[str, object] | None) -> Profile:
    if overrides:
        if not isinstance(overrides, Mapping):
            raise ValueError(f"profile overrides must be a mapping of keys to values; allowed keys: {_allowed()}")
        layers.append(overrides)
    merged: dict[str, object] = {}
    for layer in layers:
        _merge_into(merged, layer)
    return _build(name, merged)


@lru_cache(maxsize=None)
def _read_json(name: str) -> Mapping[str, object]:
    text = resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


def _allowed() -> str:
    return ", ".join(PROFILE_KEYS)


def _merge_into(merged: dict[str, object], layer: Mapping[str, object]) -> None:
    for key, value in layer.items():
        if key not in PROFILE_KEYS:
            raise ValueError(f"unknown profile key {key!r}; allowed keys: {_allowed()}")
        if key in _NESTED:
            if not isinstance(value, Mapping):
                raise ValueError(f"profile key {key!r} must be a mapping, got {value!r}")
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value


def _build(name: str, raw: Mapping[str, object]) -> Profile:
    missing = [key for key in PROFILE_KEYS if key not in raw]
    if missing:
        raise ValueError(f"profile {name!r} lacks keys: {', '.join(missing)}")
    scalars = {key: bounds.validate(key, raw[key]) for key, bounds in _SCALARS.items()}
    if not isinstance(raw["calibrated"], bool):
        raise ValueError(f"profile key 'calibrated' must be true or false, got {raw['calibrated']!r}")
    if scalars["low_entropy_bits"] >= scalars["high_entropy_bits"]:
        raise ValueError("profile key 'low_entropy_bits' must be below 'high_entropy_bits'")
    if scalars["risk_threshold_warning"] > scalars["risk_threshold_critical"]:
        raise ValueError("profile key 'risk_threshold_warning' must not exceed 'risk_threshold_critical'")
    return Profile(
        name=name,
        calibrated=raw["calibrated"],
        **scalars,
        early_warning_weights=_build_warning_weights(raw["early_warning_weights"]),
        risk_model=_build_risk_model(raw["risk_model"]),
    )


def _build_warning_weights(raw: Mapping[str, object]) -> WarningWeights:
    unknown = [key for key in raw if key not in WARNING_SIGNAL_NAMES]
    missing = [key for key in WARNING_SIGNAL_NAMES if key not in raw]
    if unknown or missing:
        raise ValueError(
            f"profile key 'early_warning_weights' has unknown {unknown} / missing {missing} signals; "
            f"allowed: {', '.join(WARNING_SIGNAL_NAMES)}"
        )
    return WarningWeights(
        **{key: _WEIGHT_BOUNDS.validate(f"early_warning_weights.{key}", raw[key]) for key in WARNING_SIGNAL_NAMES}
    )


def _build_risk_model(raw: Mapping[str, object]) -> RiskModel:
    unknown = [key for key in raw if key not in _RISK_MODEL_KEYS]
    missing = [key for key in _RISK_MODEL_KEYS if key not in raw]
    if unknown or missing:
        raise ValueError(
            f"profile key 'risk_model' has unknown {unknown} / missing {missing} entries; "
            f"allowed: {', '.join(_RISK_MODEL_KEYS)}"
        )
    features = raw["features"]
    if (
        not isinstance(features, (list, tuple))
        or not all(isinstance(f, str) and f in RISK_FEATURE_NAMES for f in features)
        or len(set(features)) != len(features)
    ):
        raise ValueError(
            f"profile key 'risk_model.features' must list distinct names from: {', '.join(RISK_FEATURE_NAMES)}; "
            f"got {features!r}"
        )
    number = _Bounds(float, -_BIG, _BIG)
    vectors = {}
    for key in ("weights", "reference"):
        values = raw[key]
        if not isinstance(values, (list, tuple)) or len(values) != len(features):
            raise ValueError(
                f"profile key 'risk_model.{key}' must be a list of {len(features)} numbers "
                f"(one per feature), got {values!r}"
            )
        vectors[key] = tuple(number.validate(f"risk_model.{key}", v) for v in values)
    return RiskModel(
        features=tuple(features),
        weights=vectors["weights"],
        bias=number.validate("risk_model.bias", raw["bias"]),
        reference=vectors["reference"],
    )
