#!/bin/sh
# JupyterLab under the hub's path prefix, on the hub's port, with the user's data directory
# as its root. No token or password: only the hub's authenticated user reaches this container.
set -eu
exec jupyter lab \
    --ip=0.0.0.0 \
    --port="${SERVICEHUB_PORT:-8888}" \
    --ServerApp.base_url="${SERVICEHUB_BASE_URL:-/}" \
    --ServerApp.root_dir="${SERVICEHUB_DATA_DIR:-/data}"
