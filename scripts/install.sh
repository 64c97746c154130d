#!/usr/bin/env bash
# Installs everything CPD Explorer needs into ./.venv (idempotent). With --test, also Debian's Chromium for the
# browser tests. torch is pinned to the CPU build (requirements.txt); mace-torch is installed without its
# e3nn==0.4.4 pin (requirements-nodeps.txt), its runtime dependencies being listed in requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
.venv/bin/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
if [ "${1:-}" = "--test" ] && [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium >/dev/null
fi
# the dashboard's first view (1,000 QM9 molecules through ANI-2x AEV and MACE-SPICE) into cache/, so the first
# chart of `streamlit run app.py` appears within seconds; cached entries are reused, so a rerun is quick
.venv/bin/python -m cpd_core precompute-default
echo "CPD Explorer environment ready in .venv"
