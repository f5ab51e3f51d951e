#!/usr/bin/env bash
# Build a release in this checkout, without a database or Redis: the venv with the
# project's dependencies (no dev tools) and the static files collected into STATIC_ROOT
# (staticfiles/), which nginx serves. Then run deploy/release.sh once, and start (or
# restart) the app processes with deploy/start.sh. The Dockerfile runs this script too.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install --upgrade pip
"${pip[@]}" install --editable .

# Collecting needs the settings, not the secrets: the production storage (hashed,
# compressed names) is chosen by DEBUG=false, and the key is never used. Files of the
# previous release stay (no --clear): pages that processes still on it render link them.
DEBUG=false SECRET_KEY="${SECRET_KEY:-collectstatic-only-not-a-secret}" \
    "$VENV/bin/python" manage.py collectstatic --no-input --verbosity 0
echo "Built: $VENV, $(find staticfiles -type f | wc -l) static files in staticfiles/"
