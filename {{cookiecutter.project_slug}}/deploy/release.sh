#!/usr/bin/env bash
# The release step: migrate the database, once per deploy, before the app processes are
# (re)started on the new code. Never from deploy/start.sh: N processes starting at once
# would race to apply the same migrations.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
"$VENV/bin/python" manage.py migrate --no-input
