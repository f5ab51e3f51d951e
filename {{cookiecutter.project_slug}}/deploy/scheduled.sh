#!/usr/bin/env bash
# The periodic management commands, run once a day by the {{ cookiecutter.project_slug }}-scheduled.timer
# (deploy/systemd/) or any scheduler. Add new periodic commands here.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
manage=("$VENV/bin/python" manage.py)
# Chats every member deleted for themselves, with their messages.
"${manage[@]}" purge_deleted_chats
# Expired sessions (Django keeps them in the database until this runs).
"${manage[@]}" clearsessions
