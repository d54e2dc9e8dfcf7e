#!/usr/bin/env bash
# Headless Chromium for tests/cli/test_html_report.py (the HTML report is checked in a real browser).
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  echo "chromium: $(chromium --version 2>/dev/null | head -n1)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
$SUDO apt-get install -y --no-install-recommends chromium
echo "chromium: $(chromium --version 2>/dev/null | head -n1)"
