"""What the CLI and the HTML report both show of a Report: step and layer series, RAG context.

Each view reads a Report whichever way the run was captured, so that the terminal view and the
HTML page never disagree about a run.

With a full trace (payload) every step is there; in summary capture the `corevital.step`
events carry a strided sample of the steps (always the first, last and flagged ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..health_vocabulary import DISPLAY_ORDER, short_flag_name
from ..telemetry import attributes as attrs
from .schema import Report

STEP_STATS = ("entropy", "surprisal", "margin")
_EVENT_KEYS = {"entropy": attrs.STEP_ENTROPY, "surprisal": attrs.STEP_SURPRISAL, "margin": attrs.STEP_MARGIN}


@dataclass
class StepSeries:
    steps: list[int] = field(default_factory=list)  # step index of each value
    values: dict[str, list[float | None]] = field(default_factory=dict)  # STEP_STATS -> one value per step
    flagged: list[int] = field(default_factory=list)
    complete: bool = False  # every generated step is there
    source: str = "step events"  # or "full trace"

    def describe(self, generated: int | None) -> str:
        if self.complete:
            return f"every generated step ({self.source})"
        return f"{len(self.steps)} of {generated or '?'} steps, sampled ({self.source}); a full trace has every step"

    def __bool__(self) -> bool:
        return bool(self.steps)


def shown_sequence(report: Report) -> int:
    """The sequence a single-run view shows: the worst one of a batch."""
    if report.aggregate is not None and report.aggregate.worst_sequence is not None:
        return report.aggregate.worst_sequence
    return 0


def step_series(report: Report, sequence: int | None = None) -> StepSeries:
    sequence = shown_sequence(report) if sequence is None else sequence
    flagged = _flagged_steps(report, sequence)
    timeline = report.sequences[sequence].steps if sequence < len(report.sequences) else None
    if timeline is not None:
        kept = [i for i, valid in enumerate(timeline.valid) if valid]
        return StepSeries(
            steps=kept,
            values={stat: [getattr(timeline, stat)[i] for i in kept] for stat in STEP_STATS},
            flagged=flagged,
            complete=True,
            source="full trace",
        )
    events = sorted(
        (
            e.attributes
            for e in report.events
            if e.name == attrs.STEP_EVENT and int(e.attributes.get(attrs.STEP_SEQUENCE, 0)) == sequence
        ),
        key=lambda a: int(a.get(attrs.STEP_INDEX, 0)),
    )
    flagged = flagged or [int(a[attrs.STEP_INDEX]) for a in events if a.get(attrs.STEP_FLAGGED)]
    generated = report.usage.output_tokens if len(report.sequences) <= 1 else None
    return StepSeries(
        steps=[int(a.get(attrs.STEP_INDEX, 0)) for a in events],
        values={stat: [_number(a.get(key)) for a in events] for stat, key in _EVENT_KEYS.items()},
        flagged=flagged,
        complete=generated is not None and len(events) >= generated,
    )


def layer_grid(report: Report, which: str, sequence: int | None = None) -> list[list[float | None]] | None:
    """[layer][step] grid of `hidden_l2_norm` or `attention_entropy` (None without a full trace)."""
    sequence = shown_sequence(report) if sequence is None else sequence
    if sequence >= len(report.sequences):
        return None
    seq = report.sequences[sequence]
    if which == "hidden_l2_norm":
        grid = seq.layers.l2_norm if seq.layers is not None else None
    elif which == "attention_entropy":
        grid = seq.attention.entropy_mean if seq.attention is not None else None
    else:
        raise ValueError(f"unknown layer grid {which!r}")
    if not grid or not grid[0]:
        return None
    valid = seq.steps.valid if seq.steps is not None else [True] * len(grid)
    steps = [row for row, ok in zip(grid, valid) if ok]
    if all(v is None for row in steps for v in row):
        return None
    return [list(column) for column in zip(*steps)]  # transpose to [layer][step]


def _flagged_steps(report: Report, sequence: int) -> list[int]:
    if sequence < len(report.sequences) and report.sequences[sequence].analysis is not None:
        return list(report.sequences[sequence].analysis.flagged_steps)
    return []


def _number(value) -> float | None:
    if value is None or isinstance(value, (bool, str)):
        return None
    return float(value)


def rag_summary(rag) -> str:
    """`120 context tokens; 2 documents: kb-7, kb-9; retriever=bm25` (titles when there are no ids)."""
    parts = [] if rag.context_tokens is None else [f"{rag.context_tokens} context tokens"]
    documents = rag.document_ids or rag.document_titles
    if documents:
        shown = ", ".join(documents[:5]) + (", …" if len(documents) > 5 else "")
        parts.append(f"{len(documents)} document{'' if len(documents) == 1 else 's'}: {shown}")
    parts += [f"{key}={value}" for key, value in rag.metadata.items()]
    return "; ".join(parts) or "recorded, empty"


def raised_flags(report: Report) -> list[str]:
    """Short names of the run's raised health flags, in display order (as the store lists them)."""
    return [short_flag_name(name) for name in DISPLAY_ORDER if getattr(report.health, name)]
