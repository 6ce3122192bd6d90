#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests, listening on 127.0.0.1 only.
#
#   scripts/postgres-test-server.sh start DIR PORT      initdb a new cluster in DIR, start it on 127.0.0.1:PORT
#   scripts/postgres-test-server.sh createdb DIR PORT NAME   create database NAME in it
#   scripts/postgres-test-server.sh stop DIR PORT       stop it and remove DIR
#
# The cluster trusts every local connection (user "postgres", no password), keeps its
# unix socket in DIR/socket, and runs with fsync off: it is for tests only, never for
# data. PostgreSQL refuses to run as root, so as root the server runs as the
# "postgres" user (created by Debian's postgresql package) and DIR is chowned to it.
# The server binaries come from /usr/lib/postgresql/<newest version>/bin (Debian), or
# from PATH; scripts/deps.sh installs them.
set -euo pipefail

usage() {
    echo "usage: $0 start|stop DIR PORT | createdb DIR PORT NAME" >&2
    exit 2
}
(( $# >= 3 )) || usage
command=$1
dir=$2
port=$3
[[ "$port" =~ ^[0-9]+$ ]] && (( port > 0 && port < 65536 )) || { echo "error: bad port '$port'" >&2; exit 2; }
[[ "$dir" == /* ]] || { echo "error: DIR must be an absolute path, got '$dir'" >&2; exit 2; }
marker="$dir/.cistern-postgres-test-server"

# The directory holding initdb, pg_ctl and psql.
find_bin() {
    local version
    if [[ -d /usr/lib/postgresql ]]; then
        for version in $(ls /usr/lib/postgresql | sort -V -r); do
            if [[ -x "/usr/lib/postgresql/$version/bin/initdb" && -x "/usr/lib/postgresql/$version/bin/pg_ctl" ]]; then
                echo "/usr/lib/postgresql/$version/bin"
                return 0
            fi
        done
    fi
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    echo "error: the PostgreSQL server binaries (initdb, pg_ctl) are missing: not under /usr/lib/postgresql/*/bin nor on PATH; run scripts/deps.sh (it installs the postgresql and libpq-dev packages)" >&2
    return 3
}

# Runs a command as the cluster's owner: "postgres" when root, else this user.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# Runs a command with every file descriptor above 2 closed, so a daemon it leaves
# behind (the postmaster) does not hold the caller's pipes or sockets open: a caller
# that waits for end-of-file on them (Foundation's Process does, for exit) would hang.
without_inherited_fds() {
    (
        for path in /proc/self/fd/* /dev/fd/*; do
            fd=${path##*/}
            if [[ "$fd" =~ ^[0-9]+$ ]] && (( fd > 2 )); then
                eval "exec $fd>&-" 2>/dev/null || true
            fi
        done
        "$@"
    )
}

start() {
    local bin
    bin=$(find_bin) || exit 3
    if [[ -e "$dir" && ! -e "$marker" ]] && [[ -n "$(ls -A "$dir" 2>/dev/null)" ]]; then
        echo "error: $dir exists and is not empty; give a new directory" >&2
        exit 2
    fi
    mkdir -p "$dir/socket"
    touch "$marker"
    if [[ $(id -u) -eq 0 ]]; then
        if ! id postgres >/dev/null 2>&1; then
            echo "error: running as root, but there is no 'postgres' user to run the server as (PostgreSQL refuses root); run scripts/deps.sh (the postgresql package creates it)" >&2
            exit 3
        fi
        chown -R postgres: "$dir"
        if ! runuser -u postgres -- test -w "$dir"; then
            echo "error: the postgres user cannot write $dir (a parent directory is not searchable by it); use a directory under /tmp" >&2
            exit 2
        fi
    fi
    if ! as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1; then
        echo "error: initdb failed in $dir/data:" >&2
        tail -n 20 "$dir/initdb.log" >&2
        exit 1
    fi
    cat >>"$dir/data/postgresql.conf" <<EOF

# scripts/postgres-test-server.sh: loopback only, throwaway, fast.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/socket'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
EOF
    if ! without_inherited_fds as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
        >"$dir/pg_ctl.log" 2>&1 </dev/null; then
        echo "error: the PostgreSQL server did not start on 127.0.0.1:$port:" >&2
        tail -n 20 "$dir/server.log" >&2 2>/dev/null || cat "$dir/pg_ctl.log" >&2
        exit 1
    fi
}

createdb() {
    local bin name=${4:-}
    [[ "$name" =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "error: bad database name '$name'" >&2; exit 2; }
    bin=$(find_bin) || exit 3
    as_owner "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
        -c "CREATE DATABASE $name" </dev/null
}

stop() {
    local bin
    [[ -e "$dir" ]] || return 0
    if [[ ! -e "$marker" ]]; then
        echo "error: $dir was not made by this script; not removing it" >&2
        exit 2
    fi
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        bin=$(find_bin) || exit 3
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
            || as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 \
            || true
    fi
    rm -rf "$dir"
}

case "$command" in
    start) start ;;
    stop) stop ;;
    createdb) createdb "$@" ;;
    *) usage ;;
esac
