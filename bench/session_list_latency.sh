#!/usr/bin/env bash
# bench/session_list_latency.sh — latency of `GET /api/v1/sessions` with a large store, on SQLite
# and on PostgreSQL. Run from the repo root:   bench/session_list_latency.sh
#
# WHAT IT DOES (loopback only, everything in a fresh temp dir, cleaned up on exit):
#   * builds the release binaries (`cargo build --release -p wardengate -p wg-bench`; skip with
#     WG_BENCH_NO_BUILD=1; WG_BENCH_BIN=DIR uses binaries from DIR instead of target/release),
#   * per engine, fills a fresh store with `wg-bench populate` (bench/src/populate.rs): 10,000
#     live sessions through the store's own `insert_session`, 1,000,000 closed ones with batched
#     multi-row INSERTs over the schema the store's migrations create, then reads both kinds
#     back through `Store::list_sessions`. 2,000 actors, 500 targets (ssh/pg/rdp), 4 gateways.
#     PostgreSQL gets `ANALYZE sessions` (what autovacuum does after a bulk load); SQLite none
#     (the product never runs ANALYZE),
#   * starts the real control plane over that store, and uses its real bootstrap admin token:
#       SQLite      `wardengate dev --data-dir DIR` (the populated DIR/wardengate.db),
#       PostgreSQL  `wardengate control --config FILE` (a control-plane replica, store: the URL),
#   * times sequential requests per query over one keep-alive HTTP/1.1 connection
#     (`wg-bench latency`, reqwest): WG_BENCH_WARMUP untimed, then WG_BENCH_REQUESTS timed, each
#     from sending the request to having read the whole body,
#   * times `Store::list_sessions` itself, in process, for the default live list at page sizes
#     100 and 1000 (`wg-bench store-list`), to tell the store's share from the API's,
#   * prints the plan each engine chose for each query (EXPLAIN QUERY PLAN on SQLite, EXPLAIN
#     ANALYZE on PostgreSQL, with the filter values inlined) unless WG_BENCH_EXPLAIN=0.
#
# THE PAGE: every request asks for a page of WG_BENCH_PAGE sessions (`limit=`, default 100, as
# the issue specifies; the API's maximum and default is 1000), newest first; so an unfiltered
# list or a broad filter answers a full page, a narrow filter fewer (the `rows` column).
#
# CASES (query strings): all (none), actor=user0007@corp, target=tgt-0007, state=active,
#   idle_gt=5m, protocol=rdp, gateway=gw-bench-2, target=tgt-0007&state=active, and history:
#   state=closed, state=closed&actor=user0007@corp.
#
# HOW TO READ THE OUTPUT: p50/p90/p99/max/mean in milliseconds; rows = sessions in the answer;
#   bytes = JSON body size. The issue's goal is p99 <= 25 ms; nothing here asserts it.
#
# KNOBS (environment): WG_BENCH_LIVE (10000), WG_BENCH_CLOSED (1000000), WG_BENCH_REQUESTS
#   (500), WG_BENCH_WARMUP (50), WG_BENCH_PAGE (100), WG_BENCH_ENGINES ("sqlite postgres"), WG_BENCH_PG_URL (server
#   URL without database, postgres://postgres@127.0.0.1:5432), WG_BENCH_PG_DB (scratch database,
#   wg_bench: dropped and re-created, and dropped at exit), WG_BENCH_EXPLAIN (1),
#   WG_BENCH_NO_BUILD=1, WG_BENCH_KEEP=1 (keep the temp dir and the database).
# Needs: cargo, python3, ssh-keygen, sqlite3 and psql (for the plans), a PostgreSQL server that
#   lets that URL create databases (trust auth on loopback works), ~1.5 GB free disk per engine.

set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${WG_BENCH_BIN:-$REPO/target/release}
LIVE=${WG_BENCH_LIVE:-10000}
CLOSED=${WG_BENCH_CLOSED:-1000000}
REQUESTS=${WG_BENCH_REQUESTS:-500}
WARMUP=${WG_BENCH_WARMUP:-50}
PAGE=${WG_BENCH_PAGE:-100}
ENGINES=${WG_BENCH_ENGINES:-sqlite postgres}
PG_URL=${WG_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
PG_DB=${WG_BENCH_PG_DB:-wg_bench}
EXPLAIN=${WG_BENCH_EXPLAIN:-1}
NCPU=$(nproc)

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- processes and cleanup
# Every daemon is started under `setsid`, so its process group id is its pid and cleanup ends
# exactly the groups this script started.
PGIDS=()
TMP=""
PG_CREATED=0
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pg
    for pg in "${PGIDS[@]}"; do kill -TERM -- "-$pg" 2>/dev/null; done
    for _ in $(seq 50); do
        local alive=0
        for pg in "${PGIDS[@]}"; do kill -0 -- "-$pg" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pg in "${PGIDS[@]}"; do kill -KILL -- "-$pg" 2>/dev/null; done
    if [ "$PG_CREATED" = 1 ] && [ "${WG_BENCH_KEEP:-0}" != 1 ]; then
        psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 \
            || log "could not drop database $PG_DB"
    fi
    if [ -n "$TMP" ] && [ -d "$TMP" ]; then
        if [ "${WG_BENCH_KEEP:-0}" = 1 ]; then
            log "kept $TMP (WG_BENCH_KEEP=1)"
        else
            rm -rf -- "$TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port seconds
    local i
    for i in $(seq $(( $2 * 10 ))); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

stop_group() { # pgid: TERM, wait, KILL
    kill -TERM -- "-$1" 2>/dev/null
    for _ in $(seq 100); do kill -0 -- "-$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL -- "-$1" 2>/dev/null
}

# ---------------------------------------------------------------- checks and build
cd "$REPO" || die "no repo"
for tool in cargo python3 ssh-keygen; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
case " $ENGINES " in *" postgres "*)
    command -v psql >/dev/null || die "psql is required for PostgreSQL (apt-get install postgresql-client)"
    psql -qAt "$PG_URL/postgres" -c 'SELECT 1' >/dev/null 2>&1 \
        || die "cannot reach PostgreSQL at $PG_URL (set WG_BENCH_PG_URL, or WG_BENCH_ENGINES=sqlite)";;
esac
if [ "$EXPLAIN" = 1 ] && ! command -v sqlite3 >/dev/null; then
    log "sqlite3 not found: installing it for the SQLite plans (apt-get install sqlite3)"
    apt-get install -y -qq sqlite3 >/dev/null 2>&1 || { log "no sqlite3: SQLite plans skipped"; }
fi
if [ "${WG_BENCH_NO_BUILD:-0}" != 1 ]; then
    log "cargo build --release -p wardengate -p wg-bench (may wait for the cargo lock)"
    cargo build --release -p wardengate -p wg-bench >&2 || die "release build failed"
fi
for b in wardengate wg-bench; do [ -x "$BIN/$b" ] || die "missing $BIN/$b"; done

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
TMP=$(mktemp -d /tmp/wg-bench-list.XXXXXX)
chmod 700 "$TMP"
log "temp dir $TMP"
ssh-keygen -q -t ed25519 -N '' -C bench-admin -f "$TMP/admin" || die ssh-keygen

# ---------------------------------------------------------------- the cases
ACTOR=user0007@corp
TARGET=tgt-0007
CASES=(   # NAME|QUERY
    "all|"
    "actor|actor=${ACTOR/@/%40}"
    "target|target=$TARGET"
    "state=active|state=active"
    "idle_gt=5m|idle_gt=5m"
    "protocol=rdp|protocol=rdp"
    "gateway=gw-bench-2|gateway=gw-bench-2"
    "target+state=active|target=$TARGET&state=active"
    "history:state=closed|state=closed"
    "history:actor|state=closed&actor=${ACTOR/@/%40}"
)
# The SQL wg-store's list_sessions runs for each case, with the values inlined (for EXPLAIN; a
# list of live states only also carries the literal `state <> 'closed'`, as list_sessions adds).
COLS="id, state, actor, actor_groups, target, target_address, protocol, account, vault_path, policy, mfa, gateway, gateway_address, client_ip, client_geo, client_software, pty_term, pty_cols, pty_rows, recording_mode, recording_chunks, recording_bytes, recording_status, recording_sha256, created_ms, opened_ms, last_input_ms, ended_ms, end_reason, end_detail, exit_status"
case_sql() { # case-name now-ms
    local w
    case "$1" in
        all) w="state <> 'closed'" ;;
        actor) w="state <> 'closed' AND actor = '$ACTOR'" ;;
        target) w="state <> 'closed' AND target = '$TARGET'" ;;
        state=active) w="state IN ('active') AND state <> 'closed'" ;;
        idle_gt=5m) w="state <> 'closed' AND last_input_ms < $(( $2 - 300000 ))" ;;
        protocol=rdp) w="state <> 'closed' AND protocol = 'rdp'" ;;
        gateway=gw-bench-2) w="state <> 'closed' AND gateway = 'gw-bench-2'" ;;
        target+state=active) w="state IN ('active') AND state <> 'closed' AND target = '$TARGET'" ;;
        history:state=closed) w="state IN ('closed')" ;;
        history:actor) w="state IN ('closed') AND actor = '$ACTOR'" ;;
    esac
    echo "SELECT $COLS FROM sessions WHERE $w ORDER BY created_ms DESC, id DESC LIMIT $PAGE"
}
# Each case's query with the page size appended.
case_args() {
    local c q
    for c in "${CASES[@]}"; do
        q=${c#*|}
        printf -- '--case\n%s|%s%slimit=%s\n' "${c%%|*}" "$q" "${q:+&}" "$PAGE"
    done
}
mapfile -t CASE_ARGS < <(case_args)

RESULTS=()   # latency lines
STORE=()     # store-level lines
declare -A POPULATE SIZE
PLANS="$TMP/plans.txt"
: > "$PLANS"

# measure ENGINE API_URL TOKEN_FILE
measure() {
    local out
    log "$1: ${#CASES[@]} cases x ($WARMUP warm-up + $REQUESTS timed) requests"
    out=$("$BIN/wg-bench" latency --api "$2" --token-file "$3" --requests "$REQUESTS" \
        --warmup "$WARMUP" --label "$1" "${CASE_ARGS[@]}") || die "$1: latency run failed"
    echo "$out" >&2
    mapfile -t -O "${#RESULTS[@]}" RESULTS <<<"$out"
}

# store_level ENGINE URL: Store::list_sessions itself at page sizes 100 and 1000 (server stopped)
store_level() {
    local out
    log "$1: Store::list_sessions, limits 100 and 1000"
    out=$("$BIN/wg-bench" store-list --db "$2" --requests "$REQUESTS" --warmup "$WARMUP" \
        --label "$1" 2>/dev/null) || { log "$1: store-list failed"; return; }
    echo "$out" >&2
    mapfile -t -O "${#STORE[@]}" STORE <<<"$out"
}

# populate ENGINE URL
populate() {
    local t0 t1
    log "$1: populating ($LIVE live, $CLOSED closed sessions)"
    t0=$(date +%s)
    "$BIN/wg-bench" populate --db "$2" --live "$LIVE" --closed "$CLOSED" 2>&1 >/dev/null \
        | tee "$TMP/populate_$1.log" >&2
    [ "${PIPESTATUS[0]}" = 0 ] || die "$1: populate failed"
    t1=$(date +%s)
    POPULATE[$1]="$((t1 - t0)) s"
}

# ---------------------------------------------------------------- SQLite: wardengate dev
if [[ " $ENGINES " == *" sqlite "* ]]; then
    DIR="$TMP/sqlite"
    mkdir -m 700 "$DIR"
    populate sqlite "sqlite://$DIR/wardengate.db"
    SIZE[sqlite]=$(du -sh "$DIR" | cut -f1)
    APIPORT=$(free_port); SSHPORT=$(free_port)
    WARDENGATE_LOG=info setsid "$BIN/wardengate" dev --data-dir "$DIR" \
        --ssh-addr "127.0.0.1:$SSHPORT" --api-addr "127.0.0.1:$APIPORT" \
        --ssh-key "$TMP/admin.pub" </dev/null >"$TMP/wardengate.out" 2>"$TMP/wardengate.log" &
    WG_PID=$!
    PGIDS+=("$WG_PID")
    for _ in $(seq 600); do grep -q '^Try next:' "$TMP/wardengate.out" 2>/dev/null && break; sleep 0.1; done
    grep -q '^Try next:' "$TMP/wardengate.out" || { cat "$TMP/wardengate.log" >&2; die "wardengate dev did not start"; }
    log "sqlite: wardengate dev pid $WG_PID, api 127.0.0.1:$APIPORT"
    measure sqlite "http://127.0.0.1:$APIPORT" "$DIR/admin.token"
    if [ "$EXPLAIN" = 1 ] && command -v sqlite3 >/dev/null; then
        now=$(( $(date +%s%N) / 1000000 ))
        for c in "${CASES[@]}"; do
            name=${c%%|*}
            { echo "--- sqlite $name"; sqlite3 -readonly "$DIR/wardengate.db" \
                "EXPLAIN QUERY PLAN $(case_sql "$name" "$now")"; } >> "$PLANS" 2>&1
        done
    fi
    stop_group "$WG_PID"
    store_level sqlite "sqlite://$DIR/wardengate.db"
fi

# ---------------------------------------------------------------- PostgreSQL: wardengate control
if [[ " $ENGINES " == *" postgres "* ]]; then
    psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1
    psql -q "$PG_URL/postgres" -c "CREATE DATABASE $PG_DB" >/dev/null || die "cannot create database $PG_DB"
    PG_CREATED=1
    populate postgres "$PG_URL/$PG_DB"
    SIZE[postgres]=$(psql -qAt "$PG_URL/$PG_DB" -c "SELECT pg_size_pretty(pg_database_size(current_database()))")
    APIPORT=$(free_port); GRPCPORT=$(free_port)
    cat > "$TMP/control.yaml" <<EOF
store: $PG_URL/$PG_DB
dataDir: $TMP/pg
recordingsDir: $TMP/pg/recordings
apiAddr: 127.0.0.1:$APIPORT
grpcAddr: 127.0.0.1:$GRPCPORT
adminSshKeys: ["$(cat "$TMP/admin.pub")"]
EOF
    WARDENGATE_LOG=info setsid "$BIN/wardengate" control --config "$TMP/control.yaml" \
        </dev/null >"$TMP/control.out" 2>"$TMP/control.log" &
    CP_PID=$!
    PGIDS+=("$CP_PID")
    for _ in $(seq 600); do grep -q 'wardengate control: API' "$TMP/control.log" 2>/dev/null && break; sleep 0.1; done
    grep -q 'wardengate control: API' "$TMP/control.log" || { cat "$TMP/control.log" >&2; die "wardengate control did not start"; }
    API="http://127.0.0.1:$APIPORT"
    log "postgres: wardengate control pid $CP_PID, api $API"
    measure postgres "$API" "$TMP/pg/admin.token"
    if [ "$EXPLAIN" = 1 ]; then
        now=$(( $(date +%s%N) / 1000000 ))
        for c in "${CASES[@]}"; do
            name=${c%%|*}
            { echo "--- postgres $name"; psql -qAt "$PG_URL/$PG_DB" -c \
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) $(case_sql "$name" "$now")"; } >> "$PLANS" 2>&1
        done
    fi
    stop_group "$CP_PID"
    store_level postgres "$PG_URL/$PG_DB"
fi

# ---------------------------------------------------------------- report
echo
echo "Wardengate session list benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  $(uname -r)  ${NCPU} CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo))"
echo "load average at start: $LOAD0"
echo "wardengate $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet 2>/dev/null || echo '+dirty') (release), store: $LIVE live + $CLOSED closed sessions, newest migration $(ls "$REPO/crates/wg-store/migrations/sqlite" | tail -1)"
for e in $ENGINES; do
    echo "  $e: populated in ${POPULATE[$e]:-?}, store size ${SIZE[$e]:-?}"
done
echo
echo "GET /api/v1/sessions, $REQUESTS sequential requests per case after $WARMUP warm-up, one keep-alive connection (ms)"
printf '%-10s %-28s %8s %8s %8s %8s %8s %6s %9s\n' engine case p50_ms p90_ms p99_ms max_ms mean_ms rows bytes
for r in "${RESULTS[@]}"; do echo "$r"; done
echo
echo "The store's share: Store::list_sessions of the live list in-process (no HTTP, no JSON), by page size (ms)"
printf '%-10s %-28s %8s %8s %8s %8s %8s %6s\n' engine call p50_ms p90_ms p99_ms max_ms mean_ms rows
for r in "${STORE[@]}"; do echo "$r"; done
if [ "$EXPLAIN" = 1 ]; then
    echo
    echo "Query plans (the SQL of Store::list_sessions with the values inlined)"
    cat "$PLANS"
fi
