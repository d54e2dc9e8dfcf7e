"""A 2-4 sentence plain-language summary of one sequence.

Built from numbers, step indices and layer indices only: never prompt or token text, so it
is safe to export without content capture.
"""

from __future__ import annotations

from ..profiles import Profile
from .health import HealthFlags
from .repetition import Repetition

_MAX_LAYERS_NAMED = 8


def narrative(
    *,
    profile: Profile,
    valid_steps: int,
    flags: HealthFlags,
    risk_score: float,
    label: str,
    repetition: Repetition | None,
    first_nonfinite_step: int | None,
    mid_layer_steps: int,
    blamed_layers: list[int],
    failure_risk: float,
    warning_signals: list[str],
    entropy_mean: float,
    entropy_max: float,
) -> str:
    if valid_steps == 0:
        opening = f"No tokens were generated; risk {risk_score:.2f} ({label})."
    else:
        opening = f"Generated {valid_steps} steps with risk {risk_score:.2f} ({label})."
    findings = []
    if first_nonfinite_step is not None:
        kinds = " and ".join(kind for kind, seen in (("NaN", flags.nan_detected), ("Inf", flags.inf_detected)) if seen)
        findings.append(f"{kinds} values first appeared at step {first_nonfinite_step}.")
    if repetition is not None:
        findings.append(
            f"A phrase of {repetition.period} tokens repeats from step {repetition.start_step} "
            f"to step {repetition.end_step}."
        )
    if mid_layer_steps and first_nonfinite_step is None:
        findings.append(
            f"Middle-layer hidden-state norms exceeded {profile.l2_explosion_multiplier:g}x the early-layer "
            f"baseline at {mid_layer_steps} steps."
        )
    if flags.high_entropy_steps:
        findings.append(
            f"Entropy exceeded {profile.high_entropy_bits:g} bits at {flags.high_entropy_steps} of {valid_steps} "
            f"steps (mean {entropy_mean:.2f}, max {entropy_max:.2f} bits)."
        )
    if not findings:
        findings.append(_quiet_run(valid_steps, flags, entropy_mean))
    details = []
    if blamed_layers:
        named = ", ".join(str(layer) for layer in blamed_layers[:_MAX_LAYERS_NAMED])
        more = len(blamed_layers) - _MAX_LAYERS_NAMED
        details.append(f"Implicated layers: {named}{f' and {more} more' if more > 0 else ''}.")
    if warning_signals:
        signals = ", ".join(signal.replace("_", " ") for signal in warning_signals)
        details.append(f"Early-warning signals: {signals} (failure risk {failure_risk:.2f}).")
    return " ".join([opening, *findings[:2], *details][:4])


def _quiet_run(valid_steps: int, flags: HealthFlags, entropy_mean: float) -> str:
    if not valid_steps:
        return "There were no decoding steps to analyse."
    if flags.attention_collapse_detected:
        return (
            f"Mean entropy was {entropy_mean:.2f} bits; some attention heads collapsed onto one position, "
            "which many architectures do in healthy runs."
        )
    return f"Mean entropy was {entropy_mean:.2f} bits and no health flag was raised."
