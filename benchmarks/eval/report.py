"""Held-out detection quality: tables (markdown), metrics.json and generations.csv."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from opentelemetry_instrumentation_corevital.profiles import RISK_FEATURE_NAMES

from .fit import fit_logistic
from .metrics import auroc, bootstrap, brier, ece, precision_recall
from .signals import EXTRA_SIGNALS

TARGETS = {"risk_auroc": 0.80, "risk_ece": 0.08, "repetition_precision": 0.95, "repetition_recall": 0.95}
PROBABILITY_SIGNALS = ("risk_score", "risk_score_before", "failure_risk")


def evaluate(rows: list[dict], resamples: int = 1000) -> dict:
    fit = [r for r in rows if r["split"] == "fit"]
    held = [r for r in rows if r["split"] == "heldout"]
    y = _column(held, "failure")
    signals = {}
    for name in ("risk_score", "risk_score_before", *RISK_FEATURE_NAMES, *EXTRA_SIGNALS):
        probability = _as_probability(name, fit, held)
        signals[name] = {
            "auroc": bootstrap(auroc, y, _column(held, name), resamples=resamples),
            "ece": bootstrap(ece, y, probability, resamples=resamples),
            "brier": bootstrap(brier, y, probability, resamples=resamples),
            "probability": "as is" if name in PROBABILITY_SIGNALS else "1-feature logistic fitted on the fit half",
        }
    qa = [r for r in held if r["correct"] is not None]
    degenerate = _column(held, "text_degenerate")
    flags = _column(held, "repetition_flag")
    precision, recall = precision_recall(degenerate, flags)
    all_precision, all_recall = precision_recall(_column(rows, "text_degenerate"), _column(rows, "repetition_flag"))
    risk = signals["risk_score"]
    return {
        "counts": _counts(rows),
        "signals": signals,
        "subsets": {
            "qa_wrong_vs_right": bootstrap(auroc, 1 - _column(qa, "correct"), _column(qa, "risk_score"),
                                           resamples=resamples),
            "degenerate_vs_rest": bootstrap(auroc, degenerate, _column(held, "risk_score"), resamples=resamples),
            "by_category": {c: _category_auroc(held, c) for c in ("arithmetic", "fact", "repetition", "free")},
        },
        "repetition_flag": {
            "heldout": {"precision": precision, "recall": recall, "degenerate": int(degenerate.sum()),
                        "flagged": int(flags.sum())},
            "all": {"precision": all_precision, "recall": all_recall},
            "disagreements": [
                {"id": r["id"], "text_degenerate": r["text_degenerate"], "flag": r["repetition_flag"],
                 "text": r["text"]}
                for r in rows if bool(r["text_degenerate"]) != bool(r["repetition_flag"])
            ],
        },
        "targets": {
            "risk_auroc": (risk["auroc"][0], TARGETS["risk_auroc"]),
            "risk_ece": (risk["ece"][0], TARGETS["risk_ece"]),
            "repetition_precision": (precision, TARGETS["repetition_precision"]),
            "repetition_recall": (recall, TARGETS["repetition_recall"]),
        },
    }


def write(out: Path, rows: list[dict], results: dict, meta: dict) -> str:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "generations.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "metrics.json").write_text(json.dumps({"meta": meta, **results}, indent=2, default=_plain))
    table = markdown(results, meta)
    (out / "summary.md").write_text(table)
    return table


def markdown(results: dict, meta: dict) -> str:
    lines = [f"Held-out half: {results['counts']['heldout']['n']} generations "
             f"({results['counts']['heldout']['failures']} failures: {results['counts']['heldout']['by_reason']}); "
             f"fit half: {results['counts']['fit']['n']} ({results['counts']['fit']['failures']} failures). "
             f"95% intervals from {meta['bootstrap_resamples']} bootstrap resamples of the held-out rows.", "",
             "| signal | AUROC | ECE | Brier |", "|---|---|---|---|"]
    for name, values in results["signals"].items():
        lines.append(f"| `{name}` | {_ci(values['auroc'])} | {_ci(values['ece'])} | {_ci(values['brier'])} |")
    subsets = results["subsets"]
    lines += ["", "Risk score (calibrated) AUROC on held-out subsets:", "",
              "| subset | AUROC |", "|---|---|",
              f"| QA only, wrong vs right | {_ci(subsets['qa_wrong_vs_right'])} |",
              f"| degenerate vs everything else | {_ci(subsets['degenerate_vs_rest'])} |"]
    for category, (value, n, positives) in subsets["by_category"].items():
        lines.append(f"| {category} only ({positives} of {n} failed) | {_num(value)} |")
    flag = results["repetition_flag"]
    lines += ["", "Repetition flag against the text-level label:", "",
              "| rows | precision | recall |", "|---|---|---|",
              f"| held-out ({flag['heldout']['degenerate']} degenerate, {flag['heldout']['flagged']} flagged) | "
              f"{_num(flag['heldout']['precision'])} | {_num(flag['heldout']['recall'])} |",
              f"| all | {_num(flag['all']['precision'])} | {_num(flag['all']['recall'])} |",
              "", "Targets (held-out):", "", "| target | value | goal | met |", "|---|---|---|---|"]
    for name, (value, goal) in results["targets"].items():
        met = value <= goal if name.endswith("ece") else value >= goal
        lines.append(f"| {name} | {_num(value)} | {'<=' if name.endswith('ece') else '>='} {goal} | "
                     f"{'yes' if met else 'no'} |")
    return "\n".join(lines) + "\n"


def _as_probability(name: str, fit: list[dict], held: list[dict]) -> np.ndarray:
    values = _column(held, name)
    if name in PROBABILITY_SIGNALS:
        return values
    weights, bias = fit_logistic(_column(fit, name)[:, None], _column(fit, "failure"))
    return 1 / (1 + np.exp(-np.clip(values * weights[0] + bias, -60, 60)))


def _category_auroc(rows: list[dict], category: str):
    members = [r for r in rows if r["category"] == category]
    y = _column(members, "failure")
    return auroc(y, _column(members, "risk_score")), len(members), int(y.sum())


def _counts(rows: list[dict]) -> dict:
    counts = {}
    for split in ("fit", "heldout"):
        members = [r for r in rows if r["split"] == split]
        reasons = {}
        for r in members:
            reasons[r["failure_reason"]] = reasons.get(r["failure_reason"], 0) + 1
        counts[split] = {"n": len(members), "failures": int(sum(r["failure"] for r in members)),
                         "by_reason": reasons, "templates": sorted({r["template"] for r in members})}
    return counts


def _column(rows: list[dict], name: str) -> np.ndarray:
    return np.array([float(r[name]) for r in rows], float)


def _ci(triple) -> str:
    value, low, high = triple
    return f"{_num(value)} [{_num(low)}, {_num(high)}]"


def _num(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(type(value))
