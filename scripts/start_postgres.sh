#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on 127.0.0.1 for tests and local shared Optuna studies.
#
#   eval "$(scripts/start_postgres.sh)"     # exports METAOPT_TEST_POSTGRES_URL and METAOPT_PG_DIR
#   scripts/stop_postgres.sh                # stops it and deletes the data directory
#
# Uses the distribution's server binaries (installs the `postgresql` Debian package with apt-get
# when they are missing and this runs as root). The data directory is a fresh folder under /tmp
# (or $METAOPT_PG_DIR), owned by the `postgres` user when run as root; trust authentication on
# loopback only. Prints shell `export` lines on stdout; progress goes to stderr. Exit status 1 when
# no server could be started.
set -euo pipefail

log() { echo "start_postgres: $*" >&2; }

free_port() {  # a free loopback port, so several servers (and engineers) can coexist
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
        2>/dev/null || echo 55432
}
PORT="${METAOPT_PG_PORT:-$(free_port)}"
DB="${METAOPT_PG_DB:-metaopt_test}"

find_bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
    done
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 \
        && { dirname "$(command -v initdb)"; return 0; }
    return 1
}

BINDIR="$(find_bindir || true)"
if [ -z "$BINDIR" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing the postgresql package (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2 || true
        BINDIR="$(find_bindir || true)"
    fi
fi
if [ -z "$BINDIR" ]; then
    log "no PostgreSQL server binaries (initdb, pg_ctl) found and none could be installed"
    exit 1
fi

DATA="${METAOPT_PG_DIR:-$(mktemp -d /tmp/metaopt-pg.XXXXXX)}"
mkdir -p "$DATA"
RUN_AS=()
if [ "$(id -u)" -eq 0 ]; then
    # initdb refuses to run as root: the server runs as the `postgres` system user.
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown -R postgres "$DATA"
    RUN_AS=(runuser -u postgres --)
fi

if [ ! -f "$DATA/db/PG_VERSION" ]; then
    "${RUN_AS[@]}" "$BINDIR/initdb" -D "$DATA/db" -U postgres --auth=trust -E UTF8 >"$DATA/initdb.log" 2>&1 \
        || { log "initdb failed:"; cat "$DATA/initdb.log" >&2; exit 1; }
fi
# Sockets in the data folder (not /var/run/postgresql, which may not exist); TCP on loopback only.
if ! "${RUN_AS[@]}" "$BINDIR/pg_ctl" -D "$DATA/db" -l "$DATA/server.log" -w -t 60 \
        -o "-h 127.0.0.1 -p $PORT -k $DATA -c fsync=off -c max_connections=200" start >&2; then
    log "the server did not start:"; tail -20 "$DATA/server.log" >&2 || true; exit 1
fi
if ! "${RUN_AS[@]}" "$BINDIR/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname='$DB'" postgres | grep -q 1; then
    "${RUN_AS[@]}" "$BINDIR/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB" >&2
fi
log "PostgreSQL running on 127.0.0.1:$PORT (data in $DATA)"
echo "export METAOPT_PG_DIR=$DATA"
echo "export METAOPT_PG_BINDIR=$BINDIR"
echo "export METAOPT_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$PORT/$DB"
