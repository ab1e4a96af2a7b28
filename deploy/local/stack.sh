#!/usr/bin/env bash
# Sluice local development stack: a throwaway PostgreSQL cluster and a moto SQS
# server (deploy/local/moto_server.py), both on free ports on 127.0.0.1, used by
# the tests and benchmarks (docs/product.md, "Local stack, tests, benchmarks").
#
# This script owns everything under the state dir
#   ${SLUICE_STACK_DIR:-<repo root>/.sluice-dev/stack}
#     pg/data  pg/log  pg/.s.PGSQL.*   the cluster, its log and socket
#     moto.pid moto.log                the moto server
#     ports                            ports remembered across up/down
#     stack.env                        the two variables the tests read
#     .lock                            flock serialising up/down
#
# Usage: stack.sh prereqs | up | env | status | photos [BUCKET] | down [--purge]
#   prereqs check (and where possible install) PostgreSQL and moto
#   up      start whatever is not running (idempotent), print the env lines
#   env     print stack.env (exit 1 if the stack is not up)
#   status  say what runs (exit 0 only if both servers answer)
#   photos  receipt photos on moto (issue 32): the bucket BUCKET (default
#           sluice-photos), the queue sluice-photo-events and the bucket's
#           ObjectCreated notification (prefix photos/) to it; prints the
#           ingest's SLUICE_PHOTO_BUCKET, SLUICE_PHOTO_EVENTS_QUEUE_URL and
#           SLUICE_S3_ENDPOINT lines (idempotent; the stack must be up)
#   down    stop both servers; --purge also deletes the state dir
# Messages go to stderr prefixed "stack:"; only the env lines go to stdout.
# As root, PostgreSQL runs as the unprivileged user "postgres" (initdb refuses
# root). Set SLUICE_NO_INSTALL=1 to never install missing prerequisites.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
STATE="${SLUICE_STACK_DIR:-$REPO_ROOT/.sluice-dev/stack}"
PYTHON="${PYTHON:-python3}"
PG_OS_USER=postgres          # only used when running as root
LOCK_TIMEOUT=120             # seconds to wait for another up/down

log() { echo "stack: $*" >&2; }
die() { log "$*"; exit 1; }

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Run a command as the cluster owner (root -> $PG_OS_USER, else ourselves).
as_pg() {
    if is_root; then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}

load_ports() {
    PGPORT="" MOTOPORT=""
    if [[ -f "$STATE/ports" ]]; then
        PGPORT="$(sed -n 's/^PGPORT=//p' "$STATE/ports")"
        MOTOPORT="$(sed -n 's/^MOTOPORT=//p' "$STATE/ports")"
    fi
}

save_ports() {
    printf 'PGPORT=%s\nMOTOPORT=%s\n' "$PGPORT" "$MOTOPORT" >"$STATE/ports.tmp"
    mv "$STATE/ports.tmp" "$STATE/ports"
}

# Print N distinct free TCP ports on 127.0.0.1 (all bound at once, so distinct).
free_ports() {
    "$PYTHON" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

port_in_use() {
    "$PYTHON" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
EOF
}

# ---------------------------------------------------------------- PostgreSQL

PG_BIN=""
find_pg_bin() {
    local d candidates=()
    if command -v pg_config >/dev/null 2>&1; then
        candidates+=("$(pg_config --bindir 2>/dev/null || true)")
    fi
    # Highest version first.
    while IFS= read -r d; do candidates+=("$d"); done < <(
        ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -V -r)
    if command -v initdb >/dev/null 2>&1; then
        candidates+=("$(dirname "$(command -v initdb)")")
    fi
    for d in "${candidates[@]}"; do
        if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
            PG_BIN="$d"
            return 0
        fi
    done
    return 1
}

pg_running() {
    [[ -f "$STATE/pg/data/PG_VERSION" ]] || return 1
    as_pg "$PG_BIN/pg_ctl" status -D "$STATE/pg/data" >/dev/null 2>&1
}

pg_answering() {
    [[ -n "${PGPORT:-}" ]] || return 1
    if [[ -x "$PG_BIN/pg_isready" ]]; then
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT" -U postgres
    else
        pg_running
    fi
}

# As root, the cluster owner must be able to reach $STATE/pg: give o+x to any
# ancestor it cannot traverse (reported, since it changes permissions).
ensure_pg_reachable() {
    is_root || return 0
    as_pg test -x "$STATE" && return 0
    local d="" part
    IFS=/ read -ra parts <<<"${STATE#/}"
    for part in "${parts[@]}"; do
        d="$d/$part"
        if ! as_pg test -x "$d"; then
            chmod o+x "$d"
            log "made $d traversable (o+x) so user $PG_OS_USER can reach the cluster"
        fi
    done
}

start_pg() {
    local pgdir="$STATE/pg"
    # Unix socket paths are limited to 107 bytes.
    if (( ${#pgdir} + 20 > 107 )); then
        die "state dir path too long for a PostgreSQL socket: $pgdir (set SLUICE_STACK_DIR to a shorter path)"
    fi
    mkdir -p "$pgdir"
    if is_root; then
        if ! id "$PG_OS_USER" >/dev/null 2>&1; then
            log "creating system user $PG_OS_USER"
            useradd --system --user-group --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER"
        fi
        chown "$PG_OS_USER:" "$pgdir"
        ensure_pg_reachable
    fi
    chmod 700 "$pgdir"
    if [[ ! -f "$pgdir/data/PG_VERSION" ]]; then
        log "initialising a new cluster in $pgdir/data ($PG_BIN)"
        as_pg "$PG_BIN/initdb" -D "$pgdir/data" --auth=trust --username=postgres \
            --encoding=UTF8 --locale=C >"$STATE/initdb.log" 2>&1 9>&- \
            || { cat "$STATE/initdb.log" >&2; die "initdb failed"; }
    fi
    log "starting PostgreSQL on 127.0.0.1:$PGPORT"
    # fd 9 (the lock) must not leak into the server, or it would hold the lock.
    as_pg "$PG_BIN/pg_ctl" start -w -t 60 -D "$pgdir/data" -l "$pgdir/log" \
        -o "-p $PGPORT -k '$pgdir' -c listen_addresses=127.0.0.1 -c max_connections=200" \
        >/dev/null 9>&- \
        || { tail -n 20 "$pgdir/log" >&2 || true; die "PostgreSQL did not start (log: $pgdir/log)"; }
}

stop_pg() {
    if pg_running; then
        log "stopping PostgreSQL"
        as_pg "$PG_BIN/pg_ctl" stop -w -m fast -D "$STATE/pg/data" >/dev/null
    fi
}

# ---------------------------------------------------------------------- moto

moto_pid() {
    local pid
    [[ -f "$STATE/moto.pid" ]] || return 1
    pid="$(cat "$STATE/moto.pid" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    # Only trust the pid if it is still our launcher (pids get reused).
    grep -qa "moto_server.py" "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

moto_answering() {
    [[ -n "${MOTOPORT:-}" ]] || return 1
    "$PYTHON" - "$MOTOPORT" <<'EOF'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=2)
except urllib.error.HTTPError:
    pass
except OSError:
    sys.exit(1)
EOF
}

start_moto() {
    log "starting moto on 127.0.0.1:$MOTOPORT"
    rm -f "$STATE/moto.pid"
    setsid nohup "$MOTO_PYTHON" "$SCRIPT_DIR/moto_server.py" --host 127.0.0.1 \
        --port "$MOTOPORT" --pidfile "$STATE/moto.pid" \
        </dev/null >>"$STATE/moto.log" 2>&1 9>&- &
    local child=$! i
    for ((i = 0; i < 300; i++)); do   # ~30 s
        if moto_answering; then return 0; fi
        if ! kill -0 "$child" 2>/dev/null; then break; fi
        sleep 0.1
    done
    tail -n 20 "$STATE/moto.log" >&2 || true
    kill "$child" 2>/dev/null || true
    die "moto did not answer on 127.0.0.1:$MOTOPORT (log: $STATE/moto.log)"
}

stop_moto() {
    local pid i
    if pid="$(moto_pid)"; then
        log "stopping moto (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "moto did not stop in 10 s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$STATE/moto.pid"
}

# ------------------------------------------------------------ prerequisites

check_prereqs() {
    local c
    for c in flock setsid; do
        command -v "$c" >/dev/null 2>&1 || die "'$c' not found; run: apt-get install -y util-linux"
    done
    if is_root; then
        command -v runuser >/dev/null 2>&1 || die "'runuser' not found; run: apt-get install -y util-linux"
    fi
    command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; install Python 3"

    if ! find_pg_bin; then
        if is_root && [[ -z "${SLUICE_NO_INSTALL:-}" ]]; then
            log "PostgreSQL server binaries not found; installing: apt-get install -y postgresql"
            apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2
            find_pg_bin || die "PostgreSQL server binaries still not found after installing"
        else
            die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; run: sudo apt-get update && sudo apt-get install -y postgresql"
        fi
    fi
    ensure_moto
}

# moto runs under $PYTHON if it can import moto.server; otherwise under a venv of
# our own (.sluice-dev/venv), which also works where the system Python refuses
# pip installs (PEP 668).
VENV="${SLUICE_VENV:-$REPO_ROOT/.sluice-dev/venv}"
MOTO_PYTHON="$PYTHON"
ensure_moto() {
    if "$PYTHON" -c 'import moto.server' >/dev/null 2>&1; then
        MOTO_PYTHON="$PYTHON"; return 0
    fi
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import moto.server' >/dev/null 2>&1; then
        MOTO_PYTHON="$VENV/bin/python"; return 0
    fi
    if [[ -n "${SLUICE_NO_INSTALL:-}" ]]; then
        die "moto server not importable by $PYTHON; run: $PYTHON -m pip install 'moto[server]'"
    fi
    log "moto server not found; installing it: $PYTHON -m pip install 'moto[server]'"
    if "$PYTHON" -m pip install --quiet "moto[server]" >&2 \
        && "$PYTHON" -c 'import moto.server' >/dev/null 2>&1; then
        MOTO_PYTHON="$PYTHON"; return 0
    fi
    log "installing into the system Python failed; using a virtual environment in $VENV"
    if ! "$PYTHON" -m venv "$VENV" >&2; then
        if is_root; then
            apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >&2
            "$PYTHON" -m venv "$VENV" >&2 || die "cannot create $VENV"
        else
            die "cannot create a virtual environment; run: sudo apt-get install -y python3-venv"
        fi
    fi
    "$VENV/bin/python" -m pip install --quiet "moto[server]" >&2 \
        || die "pip could not install moto; run: $VENV/bin/python -m pip install 'moto[server]'"
    MOTO_PYTHON="$VENV/bin/python"
}

# ----------------------------------------------------------------- commands

write_env() {
    printf 'SLUICE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:%s/postgres\nSLUICE_TEST_SQS_ENDPOINT=http://127.0.0.1:%s\n' \
        "$PGPORT" "$MOTOPORT" >"$STATE/stack.env.tmp"
    mv "$STATE/stack.env.tmp" "$STATE/stack.env"
}

take_lock() {
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w "$LOCK_TIMEOUT" 9 || die "another stack.sh holds $STATE/.lock"
}

cmd_up() {
    check_prereqs
    take_lock
    load_ports

    local pg_up=0 moto_up=0
    if pg_running && pg_answering; then pg_up=1; fi
    if moto_pid >/dev/null && moto_answering; then moto_up=1; fi
    if (( pg_up && moto_up )) && [[ -f "$STATE/stack.env" ]]; then
        log "already up ($STATE)"
        cat "$STATE/stack.env"
        return 0
    fi

    # Reuse remembered ports when free; otherwise pick new ones.
    local fresh
    read -r -a fresh <<<"$(free_ports 2)"
    if (( ! pg_up )) && { [[ -z "$PGPORT" ]] || port_in_use "$PGPORT"; }; then
        [[ -n "$PGPORT" ]] && log "port $PGPORT is taken, PostgreSQL moves to ${fresh[0]}"
        PGPORT="${fresh[0]}"
    fi
    if (( ! moto_up )) && { [[ -z "$MOTOPORT" ]] || port_in_use "$MOTOPORT"; }; then
        [[ -n "$MOTOPORT" ]] && log "port $MOTOPORT is taken, moto moves to ${fresh[1]}"
        MOTOPORT="${fresh[1]}"
    fi
    save_ports

    if (( ! pg_up )); then
        pg_running && stop_pg   # running but not answering on the remembered port
        start_pg
    fi
    if (( ! moto_up )); then
        stop_moto               # a stale launcher that does not answer
        start_moto
    fi
    write_env
    log "up ($STATE)"
    cat "$STATE/stack.env"
}

cmd_env() {
    [[ -f "$STATE/stack.env" ]] || die "the stack is not up ($STATE); run: $0 up"
    load_ports
    find_pg_bin || true
    if ! pg_answering || ! moto_answering; then
        die "the stack in $STATE is not (fully) running; run: $0 up"
    fi
    cat "$STATE/stack.env"
}

cmd_status() {
    local ok=0 pid
    if [[ ! -d "$STATE" ]]; then
        log "no stack in $STATE"
        return 1
    fi
    load_ports
    find_pg_bin || true
    if [[ -n "$PG_BIN" ]] && pg_running && pg_answering; then
        log "PostgreSQL: running on 127.0.0.1:$PGPORT (data $STATE/pg/data, pid $(head -n1 "$STATE/pg/data/postmaster.pid"))"
    elif [[ -f "$STATE/pg/data/PG_VERSION" ]]; then
        log "PostgreSQL: stopped (cluster in $STATE/pg/data)"; ok=1
    else
        log "PostgreSQL: no cluster"; ok=1
    fi
    if pid="$(moto_pid)" && moto_answering; then
        log "moto: running on 127.0.0.1:$MOTOPORT (pid $pid)"
    elif pid="$(moto_pid)"; then
        log "moto: process $pid exists but does not answer on port ${MOTOPORT:-?}"; ok=1
    else
        log "moto: stopped"; ok=1
    fi
    if (( ok == 0 )); then log "env: $STATE/stack.env"; fi
    return "$ok"
}

cmd_down() {
    local purge=0
    case "${1:-}" in
        "") ;;
        --purge) purge=1 ;;
        *) die "usage: $0 down [--purge]" ;;
    esac
    if [[ ! -d "$STATE" ]]; then
        log "nothing to stop ($STATE does not exist)"
        return 0
    fi
    take_lock
    find_pg_bin || log "PostgreSQL binaries not found; cannot stop the cluster"
    stop_moto
    if [[ -n "$PG_BIN" ]]; then stop_pg; fi
    rm -f "$STATE/stack.env"
    if (( purge )); then
        case "$STATE" in
            "" | / | "$HOME" | "$REPO_ROOT") die "refusing to delete $STATE" ;;
        esac
        log "deleting $STATE"
        rm -rf -- "$STATE"
    fi
    log "down"
}

# Receipt photos: moto serves S3 too, presigned PUTs included, and delivers the
# bucket's ObjectCreated notifications to its own SQS queue.
cmd_photos() {
    local bucket="${1:-sluice-photos}"
    load_ports
    [[ -n "$MOTOPORT" ]] && moto_answering || die "the stack is not up; run: $0 up"
    ensure_moto
    "$MOTO_PYTHON" - "http://127.0.0.1:$MOTOPORT" "$bucket" <<'PY'
import sys, boto3
endpoint, bucket = sys.argv[1], sys.argv[2]
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="test", aws_secret_access_key="test")
s3, sqs = boto3.client("s3", **kw), boto3.client("sqs", **kw)
try:
    s3.create_bucket(Bucket=bucket)
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
queue = sqs.create_queue(QueueName="sluice-photo-events")["QueueUrl"]
arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
    "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "photos/"}]}}}]})
print(f"SLUICE_PHOTO_BUCKET={bucket}")
print(f"SLUICE_PHOTO_EVENTS_QUEUE_URL={queue}")
print(f"SLUICE_S3_ENDPOINT={endpoint}")
PY
}

STATE="$(realpath -m -- "$STATE")"   # absolute: it goes into -k and the pid files

case "${1:-}" in
    prereqs) check_prereqs; log "prerequisites present (PostgreSQL in $PG_BIN, moto under $MOTO_PYTHON)" ;;
    up) shift; cmd_up "$@" ;;
    env) cmd_env ;;
    status) cmd_status ;;
    photos) shift; cmd_photos "$@" ;;
    down) shift; cmd_down "$@" ;;
    *) echo "usage: $0 prereqs | up | env | status | photos [BUCKET] | down [--purge]" >&2; exit 2 ;;
esac
