#!/usr/bin/env bash
# Arize Phoenix for tests/phoenix/ (spans and risk annotations checked in a real Phoenix server).
# Phoenix goes into its own venv, .phoenix-venv: it pins OpenTelemetry, pydantic and SQLAlchemy
# versions of its own, which must not change the ones the package is tested with in .venv.
# About 50 s and 850 MB on 2 cores (measured with pip from the package registry).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

PHOENIX_VERSION="20.26.1"
VENV=".phoenix-venv"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import phoenix.server.main" 2>/dev/null \
   && [ "$("$VENV/bin/pip" show arize-phoenix 2>/dev/null | sed -n 's/^Version: //p')" = "$PHOENIX_VERSION" ]; then
  echo "phoenix: $PHOENIX_VERSION in $VENV"
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "arize-phoenix==$PHOENIX_VERSION"
echo "phoenix: $PHOENIX_VERSION in $VENV"
