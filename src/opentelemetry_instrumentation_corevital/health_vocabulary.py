"""The health vocabulary: the flags, the critical rule and the risk labels, each spelled once.

Analysis decides them, telemetry writes them, the store, the CLI and the HTML report read them
back; all of them import these names. Every list of flags is derived from `HealthFlags`'
fields, in field order: the span attribute `corevital.health.<field>`, the store column
`<field>`, the `corevital.health.flag` metric label `<field>` and the report's `Health`
fields. The store and the CLI show the shorter `short_flag_name`. Plain Python (no numpy):
the CLI imports this before it knows whether it will need anything heavier.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

RISK_HEALTHY, RISK_WARNING, RISK_CRITICAL = "healthy", "warning", "critical"
RISK_LABELS = (RISK_HEALTHY, RISK_WARNING, RISK_CRITICAL)

HEALTH_ATTRIBUTE_PREFIX = "corevital.health."


@dataclass(frozen=True)
class HealthFlags:
    """Health flags of one sequence (or of a batch, merged). A count flag is raised above zero."""

    nan_detected: bool = False
    inf_detected: bool = False
    attention_collapse_detected: bool = False
    high_entropy_steps: int = 0
    repetition_loop_detected: bool = False
    mid_layer_anomaly_detected: bool = False

    def raised(self) -> tuple[str, ...]:
        """Names of the flags that are set (`high_entropy_steps` when above zero), in field order."""
        return tuple(name for name in FLAG_NAMES if getattr(self, name))

    @property
    def any_raised(self) -> bool:
        return bool(self.raised())

    @property
    def critical(self) -> bool:
        """A flag that attaches the full trace in `on_risk` mode and asks a live caller to intervene."""
        return any(getattr(self, name) for name in CRITICAL_FLAGS)

    def merge(self, other: "HealthFlags") -> "HealthFlags":
        """Flags of a batch: any sequence's flag raises it; high-entropy steps add up."""
        merged = {name: getattr(self, name) or getattr(other, name) for name in FLAG_NAMES}
        merged.update({name: getattr(self, name) + getattr(other, name) for name in COUNT_FLAGS})
        return HealthFlags(**merged)


FLAG_NAMES = tuple(f.name for f in fields(HealthFlags))
COUNT_FLAGS = ("high_entropy_steps",)
BOOLEAN_FLAGS = tuple(name for name in FLAG_NAMES if name not in COUNT_FLAGS)
# high entropy alone is common on open-ended text; these mean the output cannot be trusted
CRITICAL_FLAGS = ("nan_detected", "inf_detected", "repetition_loop_detected", "mid_layer_anomaly_detected")
# what the store's `flags` list and the CLI show: booleans first, then the count flags
DISPLAY_ORDER = (*BOOLEAN_FLAGS, *COUNT_FLAGS)


def flag_attribute(name: str) -> str:
    """The span attribute of a flag: `corevital.health.<field>`."""
    return HEALTH_ATTRIBUTE_PREFIX + name


def short_flag_name(name: str) -> str:
    """`nan_detected` → `nan`, `high_entropy_steps` → `high_entropy`: the store's and CLI's name."""
    return name.removesuffix("_detected").removesuffix("_steps")


def at_risk(risk_score: float, critical: bool, risk_threshold: float) -> bool:
    """The one rule for a risky run: a critical flag, or a risk score at or over the threshold."""
    return critical or risk_score >= risk_threshold
