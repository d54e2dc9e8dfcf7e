#!/usr/bin/env bash
# What tests/delivery/ needs (OTLP over a real wire, Prometheus alerting). Idempotent.
#   Debian: prometheus (the prometheus and promtool binaries)
#   (the Python side, oteltap, rotel, the OTLP gRPC and Prometheus exporters and PyYAML, comes
#   with the test extra that scripts/setup.sh installs)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  $SUDO apt-get install -y --no-install-recommends prometheus
fi
echo "delivery: $(prometheus --version 2>&1 | head -n1)"

.venv/bin/python - <<'PY'
import importlib.metadata as md
print("delivery:", ", ".join(f"{n} {md.version(n)}" for n in (
    "oteltap", "rotel", "opentelemetry-exporter-otlp-proto-grpc", "opentelemetry-exporter-prometheus", "PyYAML")))
PY
