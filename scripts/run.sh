#!/usr/bin/env bash
# Start a handler service on :9080 (the order-fulfilment saga unless APP says otherwise, e.g.
# APP=examples.all:application) and the proxy on :8080 (ingress) / :9070 (admin) / :9071 (step acks).
set -euo pipefail
PY=${PY:-.venv/bin/python}
HANDLER_PORT=${HANDLER_PORT:-9080}
APP=${APP:-examples.orders:application}
"$PY" -m uvicorn "$APP" --host 127.0.0.1 --port "$HANDLER_PORT" --log-level warning &
handler=$!
trap 'kill $handler 2>/dev/null || true' EXIT
exec_args=(--data-dir "${PROXY_DATA_DIR:-./data}" --deployment "http://127.0.0.1:$HANDLER_PORT")
echo "proxy: ingress http://127.0.0.1:${PROXY_INGRESS_PORT:-8080}  admin http://127.0.0.1:${PROXY_ADMIN_PORT:-9070}  callback http://127.0.0.1:${PROXY_CALLBACK_PORT:-9071}"
"$PY" -m proxy "${exec_args[@]}" "$@"
