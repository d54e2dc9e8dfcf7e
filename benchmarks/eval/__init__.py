"""Evaluation harness: does CoreVital's risk score predict failures of a real model?

    python -m benchmarks.eval                  # full run: ~650 SmolLM2 generations, fit, report
    python -m benchmarks.eval --smoke          # a handful of generations, checks the pipeline only

Stages (one module each): dataset (prompts, templates, fit/held-out split), generation
(batched SmolLM2 generate under a capture session, summaries cached per batch), labels
(answer checks and a text-level degeneration check, independent of our signals), signals
(analyze() on each generation), fit (logistic regression over the risk features on the fit
half), metrics (AUROC, ECE, Brier, bootstrap intervals) and report (tables under results/
and docs/evaluation.md).
"""
