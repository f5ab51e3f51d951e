#!/usr/bin/env bash
# Start ONE app process on ${HOST:-127.0.0.1}:$PORT, serving pages and websockets: gunicorn
# with one uvicorn worker, set up in config/gunicorn.py (as `make serve-prod`).
#
# Run one per port behind nginx (deploy/nginx-site.conf lists them in its upstream):
# systemd's {{ cookiecutter.project_slug }}-app@<port> units and compose.yaml's app services run this script.
# deploy/build.sh must have run first (the venv, the static files); the settings come from
# the environment and .env, as for manage.py. On SIGTERM (systemctl stop/restart, docker
# stop) the process stops accepting, closes its websockets with 1012 so browsers reconnect
# at once to another process, finishes its requests and exits within GRACEFUL_TIMEOUT
# (10 s) + 10 s. Behind the proxy (BEHIND_TLS_PROXY=true) the client's address and scheme
# come from nginx's X-Forwarded-* headers (config/gunicorn.py), never otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${PORT:?Set PORT, the port this process listens on}"
export HOST="${HOST:-127.0.0.1}" PORT
VENV="${VENV:-.venv}"

exec "$VENV/bin/gunicorn" -c python:config.gunicorn config.asgi:application
