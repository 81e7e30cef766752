#!/usr/bin/env bash
# Stop the server scripts/start_mlflow.sh started and delete its throw-away folder.
#   scripts/stop_mlflow.sh [DIR]      (default: $METAOPT_MLFLOW_DIR)
set -uo pipefail
DIR="${1:-${METAOPT_MLFLOW_DIR:-}}"
if [ -z "$DIR" ] || [ ! -d "$DIR" ]; then
    echo "stop_mlflow: no server folder given (argument or METAOPT_MLFLOW_DIR)" >&2
    exit 0
fi
case "$DIR" in
    /tmp/*) ;;
    *) echo "stop_mlflow: refusing to delete $DIR (not under /tmp)" >&2; exit 1 ;;
esac
if [ -f "$DIR/server.pid" ]; then
    PID="$(cat "$DIR/server.pid")"
    # the server was started with setsid: its process group is its pid
    kill -TERM -- "-$PID" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$PID" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$PID" 2>/dev/null || true
fi
rm -rf "$DIR"
echo "stop_mlflow: stopped and removed $DIR" >&2
