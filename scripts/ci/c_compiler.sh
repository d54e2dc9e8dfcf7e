#!/usr/bin/env bash
# A C/C++ compiler for tests/compile/: torch.compile's inductor backend builds its CPU kernels with one.
set -euo pipefail

for compiler in "${CXX:-}" g++ c++ clang++; do
  if [ -n "$compiler" ] && command -v "$compiler" >/dev/null 2>&1; then
    echo "C++ compiler: $("$compiler" --version | head -n1)"
    exit 0
  fi
done
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
$SUDO apt-get install -y --no-install-recommends g++
echo "C++ compiler: $(g++ --version | head -n1)"
