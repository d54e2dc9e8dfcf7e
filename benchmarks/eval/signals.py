"""One row per generation: its labels (from the text) and every CoreVital signal (from analyze())."""

from __future__ import annotations

from dataclasses import asdict

from opentelemetry_instrumentation_corevital.analysis import analyze

from .dataset import Item
from .generation import Generation
from .labels import answer_correct, degeneration, failure

# Signals that are not risk-model features, evaluated on their own.
EXTRA_SIGNALS = ("failure_risk", "high_entropy_steps", "margin_mean", "warning_signal_count")


def rows_of(items: list[Item], generations: dict[str, Generation], profile) -> list[dict]:
    rows = []
    for item in items:
        generation = generations[item.id]
        sequence = analyze(generation.summaries, profile).sequences[0]
        failed, reason = failure(item, generation.text)
        qa = item.category in ("arithmetic", "fact")
        rows.append({
            "id": item.id,
            "category": item.category,
            "template": item.template,
            "split": item.split,
            "prompt": item.prompt,
            "text": generation.text,
            "valid_steps": sequence.valid_steps,
            "seconds": generation.seconds,
            "failure": int(failed),
            "failure_reason": reason,
            "correct": (int(answer_correct(item, generation.text)) if qa else None),
            **{f"text_{key}": value for key, value in asdict(degeneration(generation.text)).items()},
            **sequence.features,
            "failure_risk": sequence.failure_risk,
            "high_entropy_steps": sequence.flags.high_entropy_steps,
            "margin_mean": sequence.margin_mean,
            "warning_signal_count": len(sequence.warning_signals),
            "repetition_flag": int(sequence.flags.repetition_loop_detected),
            "mid_layer_flag": int(sequence.flags.mid_layer_anomaly_detected),
            "collapse_flag": int(sequence.flags.attention_collapse_detected),
            "nonfinite_flag": int(sequence.flags.nan_detected or sequence.flags.inf_detected),
            "repetition_period": sequence.repetition.period if sequence.repetition else 0,
            "repetition_start": sequence.repetition.start_step if sequence.repetition else -1,
            "risk_score": sequence.risk_score,
            "risk_label": sequence.label,
            "risk_factors": ";".join(sequence.risk_factors),
        })
    return rows


def rescore(rows: list[dict], items: list[Item], generations: dict[str, Generation], profile) -> None:
    """Replace each row's risk with what analyze() gives under `profile` (the span's value)."""
    by_id = {item.id: item for item in items}
    for row in rows:
        sequence = analyze(generations[by_id[row["id"]].id].summaries, profile).sequences[0]
        row["risk_score"] = sequence.risk_score
        row["risk_label"] = sequence.label
        row["risk_factors"] = ";".join(sequence.risk_factors)
