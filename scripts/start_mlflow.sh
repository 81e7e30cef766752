#!/usr/bin/env bash
# Start a throw-away MLflow tracking and registry server on 127.0.0.1 for tests and local trials.
#
#   eval "$(scripts/start_mlflow.sh)"     # exports METAOPT_TEST_MLFLOW_URI, METAOPT_MLFLOW_DIR, ...
#   scripts/stop_mlflow.sh                # stops it and deletes its folder
#
# Needs the `mlflow` package (pip install -e ".[mlflow]"). The backend store is a SQLite file and
# the artifact store a folder, both in a fresh folder under /tmp (or $METAOPT_MLFLOW_DIR); the
# server proxies artifacts (clients upload and download through it) and listens on loopback only,
# on a free port. Prints shell `export` lines on stdout; progress goes to stderr. Exit status 1
# when no server could be started.
set -euo pipefail

log() { echo "start_mlflow: $*" >&2; }

free_port() {  # a free loopback port, so several servers (and engineers) can coexist
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
        2>/dev/null || echo 55000
}
PORT="${METAOPT_MLFLOW_PORT:-$(free_port)}"
# The interpreter the extra was installed into (not whatever `mlflow` comes first on PATH).
PYTHON="${METAOPT_PYTHON:-python}"
if ! "$PYTHON" -c "import mlflow.server" 2>/dev/null; then
    log "$PYTHON cannot import mlflow: install the extra with pip install -e \".[mlflow]\""
    exit 1
fi

DIR="${METAOPT_MLFLOW_DIR:-$(mktemp -d /tmp/metaopt-mlflow.XXXXXX)}"
mkdir -p "$DIR/artifacts"
URI="http://127.0.0.1:$PORT"
# One worker: the tests are light and CI has two cores. setsid: the server and its workers form
# one process group, which stop_mlflow.sh ends as a whole.
setsid "$PYTHON" -m mlflow server --host 127.0.0.1 --port "$PORT" --workers 1 \
    --backend-store-uri "sqlite:///$DIR/mlflow.db" --artifacts-destination "$DIR/artifacts" \
    >"$DIR/server.log" 2>&1 < /dev/null &
echo $! > "$DIR/server.pid"

for _ in $(seq 1 120); do  # the first start creates the database schema: up to a minute on 2 cores
    if python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/health', timeout=2)" \
            "$URI" 2>/dev/null; then
        log "MLflow server running at $URI (data in $DIR)"
        echo "export METAOPT_MLFLOW_DIR=$DIR"
        echo "export METAOPT_TEST_MLFLOW_URI=$URI"
        exit 0
    fi
    if ! kill -0 "$(cat "$DIR/server.pid")" 2>/dev/null; then
        break
    fi
    sleep 0.5
done
log "the server did not start:"
tail -20 "$DIR/server.log" >&2 || true
kill -- "-$(cat "$DIR/server.pid")" 2>/dev/null || true
exit 1
