#!/usr/bin/env bash
# Start ONE app process on ${HOST:-127.0.0.1}:$PORT, serving pages and websockets.
#
# Run one per port behind nginx (deploy/nginx-site.conf lists them in its upstream):
# systemd's {{ cookiecutter.project_slug }}-app@<port> units and compose.yaml's app services run this script.
# deploy/build.sh must have run first (the venv, the static files); the settings come from
# the environment and .env, as for manage.py.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${PORT:?Set PORT, the port this process listens on}"
HOST="${HOST:-127.0.0.1}"
VENV="${VENV:-.venv}"

# Behind the proxy (BEHIND_TLS_PROXY=true), the client's address and scheme come from the
# X-Forwarded-* headers nginx sets. Never on a port that clients reach directly: they could
# claim any address (and dodge the per-address log-in limits).
proxy_headers=()
case "$(echo "${BEHIND_TLS_PROXY:-false}" | tr '[:upper:]' '[:lower:]')" in
    true | yes | on | 1) proxy_headers=(--proxy-headers) ;;
esac

exec "$VENV/bin/python" -m daphne --bind "$HOST" --port "$PORT" "${proxy_headers[@]}" config.asgi:application
