#!/usr/bin/env bash
# Stop the server scripts/start_postgres.sh started and delete its throw-away data directory.
#   scripts/stop_postgres.sh [DATA_DIR]      (default: $METAOPT_PG_DIR)
set -uo pipefail
DATA="${1:-${METAOPT_PG_DIR:-}}"
if [ -z "$DATA" ] || [ ! -d "$DATA" ]; then
    echo "stop_postgres: no data directory given (argument or METAOPT_PG_DIR)" >&2
    exit 0
fi
case "$DATA" in
    /tmp/*) ;;
    *) echo "stop_postgres: refusing to delete $DATA (not under /tmp)" >&2; exit 1 ;;
esac
BINDIR="${METAOPT_PG_BINDIR:-}"
if [ -z "$BINDIR" ]; then
    for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && BINDIR="$d"; done
fi
RUN_AS=()
[ "$(id -u)" -eq 0 ] && RUN_AS=(runuser -u postgres --)
if [ -f "$DATA/db/postmaster.pid" ] && [ -n "$BINDIR" ]; then
    "${RUN_AS[@]}" "$BINDIR/pg_ctl" -D "$DATA/db" -m immediate -w -t 30 stop >&2 || true
fi
rm -rf "$DATA"
echo "stop_postgres: stopped and removed $DATA" >&2
