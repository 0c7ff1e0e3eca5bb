#!/usr/bin/env bash
# bench/terminate_latency.sh — forced termination latency, API call -> client disconnect, with
# real OpenSSH clients through `wardengate dev` to a stock sshd target. Run from the repo root:
#   bench/terminate_latency.sh
#
# WHAT IT DOES (loopback only, everything in a fresh temp dir, cleaned up on exit):
#   * builds the release binaries (`cargo build --release --bin wardengate --bin wgctl`; skip
#     with WG_BENCH_NO_BUILD=1),
#   * starts a stock sshd (the target; MaxStartups raised so a thousand connections can queue)
#     and `wardengate dev` (release, --max-active 0 so the gateway admits any number of
#     sessions, open-file limit raised), and configures through wgctl two targets on that sshd:
#     `bench-rec` (policy recording: full) and `bench-norec` (recording: off),
#   * per recording mode (WG_BENCH_RECORDING, default "full off"), with bench/terminate_helper.py:
#       single  opens WG_BENCH_SINGLE_N (200) sessions one after the other — each a real
#               `ssh HOST 'echo ready; exec cat'` whose stdin the helper holds open — then
#               terminates them one at a time in a shuffled order (POST
#               /api/v1/sessions/{id}/terminate, WG_BENCH_PAUSE s apart; the others stay live),
#       mass    opens WG_BENCH_MASS_N (1000) sessions (WG_BENCH_CONCURRENCY connecting at a
#               time), waits until the API lists them all active, then ends them all with one
#               POST /api/v1/sessions/terminate {"actor": "admin@local"} (what
#               `wgctl session terminate --actor admin@local` sends),
#     and times, on the client side, from just before the request is sent to each `ssh`
#     process's exit (a pidfd in one epoll loop, so a thousand exits cost no thread each; for
#     the mass call the watching thread runs at nice -15, above the clients it watches, so that
#     it stamps exits when they happen rather than when the saturated cores let it run).
#
# HOW TO READ THE OUTPUT (milliseconds):
#   single  client exit p50/p90/p99/max over the sessions: call -> that client's disconnect;
#           API p50/p99: call -> HTTP response (the API answers once the store has the session
#           closed, which it polls every 20 ms, so the response trails the disconnect).
#   direct  the peer baseline of `mass`, measured in the same run: WG_BENCH_MASS_N clients straight
#           to the same sshd, each running `cat` on one FIFO; the helper closes the FIFO's only
#           writer, which ends every session at the same instant; first/p50/p99/last client exit
#           after that. It is what the clients and the target cost alone on these cores: `mass`
#           minus `direct` is what Wardengate adds.
#   mass    first/p50/p99/last client exit after the one call (last = the issue's "1000 sessions
#           <= 1 s"), the HTTP response time, sessions the API reports terminated/failed, and the
#           clients' exit codes (255 = ssh ended by the server's disconnect, as expected);
#           wg CPU s / host CPU s: CPU seconds used from the call to the last client's exit by
#           the wardengate process (control plane and gateway) and by the whole host (the
#           clients, sshd and its sessions included; 2 cores give at most 2 s per second).
#   Goals of the issue: single p99 <= 100 ms; 1000 sessions <= 1 s. Nothing here asserts them.
#
# KNOBS (environment): WG_BENCH_SINGLE_N (200), WG_BENCH_MASS_N (1000), WG_BENCH_CONCURRENCY
#   (16 clients connecting at once while opening the mass sessions), WG_BENCH_PAUSE (0.1 s
#   between single terminations), WG_BENCH_RECORDING ("full off"), WG_BENCH_DIRECT (1: run the
#   direct baseline after the mass runs; 0 skips it), WG_BENCH_NO_BUILD=1, WG_BENCH_KEEP=1 (keep
#   the temp dir: logs, each client's stderr). A count of 0 skips that kind of run.
# Needs: root (sshd logs in as root), openssh-server + client, python3 >= 3.9 on Linux >= 5.3
#   (os.pidfd_open), cargo. A thousand ssh clients, sshd sessions and `cat`s take ~3,000
#   processes and a few GB of RAM; opening them takes a minute or two on 2 cores.

set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPER="$REPO/bench/terminate_helper.py"
BIN="$REPO/target/release"
SINGLE_N=${WG_BENCH_SINGLE_N:-200}
MASS_N=${WG_BENCH_MASS_N:-1000}
CONC=${WG_BENCH_CONCURRENCY:-16}
PAUSE=${WG_BENCH_PAUSE:-0.1}
MODES=${WG_BENCH_RECORDING:-full off}
DIRECT=${WG_BENCH_DIRECT:-1}
NCPU=$(nproc)

noansi() { sed 's/\x1b\[[0-9;]*m//g'; }
log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- processes and cleanup
PGIDS=()
TMP=""
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

# ---------------------------------------------------------------- checks and build
cd "$REPO" || die "no repo"
[ "$(id -u)" = 0 ] || die "run as root (the sshd target logs in as root)"
[ -x /usr/sbin/sshd ] || die "no /usr/sbin/sshd (apt-get install openssh-server)"
for tool in ssh ssh-keygen python3 cargo; do command -v "$tool" >/dev/null || die "$tool is required"; done
python3 -c 'import os, sys; os.close(os.pidfd_open(os.getpid())); sys.exit(0)' 2>/dev/null \
    || die "python3 lacks os.pidfd_open (needs Python >= 3.9 on Linux >= 5.3)"
if [ "${WG_BENCH_NO_BUILD:-0}" != 1 ]; then
    log "cargo build --release --bin wardengate --bin wgctl (may wait for the cargo lock)"
    cargo build --release --bin wardengate --bin wgctl >&2 || die "release build failed"
fi
[ -x "$BIN/wardengate" ] && [ -x "$BIN/wgctl" ] || die "missing $BIN/wardengate or $BIN/wgctl"

# A thousand sessions: ~4 descriptors each in the helper, ~3 in the gateway.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
log "open-file limit $(ulimit -n)"

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
TMP=$(mktemp -d /tmp/wg-bench-term.XXXXXX)
chmod 700 "$TMP"
mkdir -p "$TMP/keys" /run/sshd
log "temp dir $TMP"

# ---------------------------------------------------------------- keys, sshd
for k in target_host target_account admin; do
    ssh-keygen -q -t ed25519 -N '' -C "bench-$k" -f "$TMP/keys/$k" || die ssh-keygen
done
cp "$TMP/keys/target_account.pub" "$TMP/keys/authorized_keys"
TPORT=$(free_port); GWPORT=$(free_port); APIPORT=$(free_port)
cat > "$TMP/sshd.conf" <<EOF
Port $TPORT
ListenAddress 127.0.0.1
HostKey $TMP/keys/target_host
AuthorizedKeysFile $TMP/keys/authorized_keys
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
LogLevel ERROR
MaxStartups 2000
MaxSessions 100
EOF
setsid /usr/sbin/sshd -D -e -f "$TMP/sshd.conf" </dev/null >/dev/null 2>"$TMP/sshd.log" &
PGIDS+=($!)
wait_port "$TPORT" 10 || { cat "$TMP/sshd.log" >&2; die "sshd did not listen"; }
log "sshd target on 127.0.0.1:$TPORT"

# ---------------------------------------------------------------- wardengate dev (release)
WARDENGATE_LOG=${WARDENGATE_LOG:-info} setsid "$BIN/wardengate" dev --data-dir "$TMP/data" \
    --ssh-addr "127.0.0.1:$GWPORT" --api-addr "127.0.0.1:$APIPORT" --max-active 0 \
    --ssh-key "$TMP/keys/admin.pub" </dev/null >"$TMP/wardengate.out" 2>"$TMP/wardengate.log" &
WG_PID=$!
PGIDS+=("$WG_PID")
for _ in $(seq 600); do grep -q '^Try next:' "$TMP/wardengate.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^Try next:' "$TMP/wardengate.out" || { cat "$TMP/wardengate.log" >&2; die "wardengate dev did not start"; }
[ "$(cat "/proc/$WG_PID/comm" 2>/dev/null)" = wardengate ] || die "pid $WG_PID is not wardengate"
wait_port "$GWPORT" 10 || die "gateway did not listen"
export WGCTL_ADDR="http://127.0.0.1:$APIPORT"
WGCTL_TOKEN=$(tr -d '[:space:]' < "$TMP/data/admin.token"); export WGCTL_TOKEN
WGCTL="$BIN/wgctl"
log "wardengate dev pid $WG_PID: ssh 127.0.0.1:$GWPORT, api 127.0.0.1:$APIPORT"

HOSTKEY=$(cut -d' ' -f1,2 "$TMP/keys/target_host.pub")
cat > "$TMP/bench.yaml" <<EOF
kind: target
name: bench-rec
address: "127.0.0.1:$TPORT"
protocol: ssh
accounts:
  - name: root
    credential: vault/ssh/bench
hostKey: "$HOSTKEY"
---
kind: target
name: bench-norec
address: "127.0.0.1:$TPORT"
protocol: ssh
accounts:
  - name: root
    credential: vault/ssh/bench
hostKey: "$HOSTKEY"
---
kind: policy
name: bench-rec-full
subjects: [user:admin@local]
targets: {names: [bench-rec]}
protocols: [ssh]
recording: full
---
kind: policy
name: bench-norec-off
subjects: [user:admin@local]
targets: {names: [bench-norec]}
protocols: [ssh]
recording: "off"
EOF
"$WGCTL" apply -f "$TMP/bench.yaml" >&2 || die "wgctl apply failed"
"$WGCTL" vault put vault/ssh/bench --private-key-file "$TMP/keys/target_account" >&2 || die "wgctl vault put failed"

CFG="$TMP/ssh_config"
cat > "$CFG" <<EOF
Host gw-full
    User admin@local:bench-rec
Host gw-off
    User admin@local:bench-norec
Host direct
    User root
    Port $TPORT
    IdentityFile $TMP/keys/target_account
Host *
    HostName 127.0.0.1
    Port $GWPORT
    IdentityFile $TMP/keys/admin
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    BatchMode yes
    LogLevel ERROR
    ConnectTimeout 60
    ServerAliveInterval 0
    ControlMaster no
    ControlPath none
EOF
out=$(timeout 60 ssh -F "$CFG" gw-full 'echo probe-ok' 2>&1) || die "probe through the gateway failed: $out"
[[ "$out" == *probe-ok* ]] || die "probe through the gateway: unexpected output: $out"

# ---------------------------------------------------------------- runs
declare -A RES
ORDER=()
FAILED=0
run_helper() { # mode(single|mass|direct) recording(full|off|-) n
    local target=bench-rec host="gw-$2"
    [ "$2" = off ] && target=bench-norec
    [ "$1" = direct ] && host=direct
    log "$1 termination, recording $2, $3 sessions"
    setsid python3 "$HELPER" "$1" --api "http://127.0.0.1:$APIPORT" --token-file "$TMP/data/admin.token" \
        --ssh-config "$CFG" --host "$host" --target "$target" --workdir "$TMP/clients_$1_$2" \
        --n "$3" --pause "$PAUSE" --concurrency "$CONC" --label "$2" --watch-pid "$WG_PID" > "$TMP/result_$1_$2.json" &
    local hp=$!
    PGIDS+=("$hp")
    wait "$hp"
    local rc=$?
    ORDER+=("$1/$2")
    RES[$1/$2]=$(tail -1 "$TMP/result_$1_$2.json")
    if [ "$rc" != 0 ] || [ -z "${RES[$1/$2]}" ]; then
        RES[$1/$2]="{\"error\": \"$1/$2: helper exit $rc\"}"
        FAILED=1
        log "  helper failed (exit $rc); gateway log tail:"; tail -20 "$TMP/wardengate.log" | noansi >&2
    else
        log "  ${RES[$1/$2]}"
    fi
    # Let the gateway report the last closes before the next run.
    for _ in $(seq 100); do
        [ "$("$WGCTL" session list -o json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["sessions"]))' 2>/dev/null)" = 0 ] && break
        sleep 0.2
    done
}
for m in $MODES; do
    [ "$SINGLE_N" -gt 0 ] && run_helper single "$m" "$SINGLE_N"
    [ "$MASS_N" -gt 0 ] && run_helper mass "$m" "$MASS_N"
done
[ "$DIRECT" = 1 ] && [ "$MASS_N" -gt 0 ] && run_helper direct - "$MASS_N"
HWM=$(awk '$1 == "VmHWM:" {printf "%.0f", $2 / 1024}' "/proc/$WG_PID/status" 2>/dev/null)

# ---------------------------------------------------------------- report
echo
echo "Wardengate termination benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  $(uname -r)  ${NCPU} CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo))"
echo "load average at start: $LOAD0"
echo "$(ssh -V 2>&1), wardengate $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet 2>/dev/null || echo '+dirty') (release, SQLite store), stock sshd target, loopback"
echo
RESULTS=(); for k in "${ORDER[@]}"; do RESULTS+=("${RES[$k]}"); done
python3 - "$MODES" "${RESULTS[@]}" <<'PY' 2>&1
import json, sys
modes = sys.argv[1].split()
docs = [json.loads(a) for a in sys.argv[2:]]
def fmt(v): return "-" if v is None else str(v)
print("Single terminations (ms from the API call; client exit = the ssh process's exit)")
print(f"{'recording':<10} {'n':>5} {'exit p50':>9} {'exit p90':>9} {'exit p99':>9} {'exit max':>9} {'API p50':>8} {'API p99':>8}  exit codes / errors")
for d in docs:
    if d.get("mode") != "single": continue
    e, a = d["exit_ms"], d["api_ms"]
    print(f"{d.get('recording','?'):<10} {d['n']:>5} {fmt(e['p50']):>9} {fmt(e['p90']):>9} {fmt(e['p99']):>9} {fmt(e['max']):>9} {fmt(a['p50']):>8} {fmt(a['p99']):>8}  {d['exit_codes']} {d['error_count']} errors {d['errors'][:2]}")
print()
print("Mass termination, one call (ms from the call; last = every client gone;")
print("direct = the peer baseline: the same clients straight to sshd, every session ended at the same instant)")
print(f"{'recording':<10} {'n':>5} {'first':>8} {'p50':>8} {'p99':>8} {'last':>8} {'API':>8} {'setup s':>8} {'wg CPU s':>8} {'host CPU s':>10}  terminated/failed, exit codes, errors")
for d in docs:
    if d.get("mode") not in ("mass", "direct"): continue
    e = d["exit_ms"]
    if d["mode"] == "direct":
        w = d.get("window_cpu_s") or {}
        print(f"{'direct':<10} {d['n']:>5} {fmt(e['first']):>8} {fmt(e['p50']):>8} {fmt(e['p99']):>8} {fmt(e['last']):>8} {'-':>8} {d['setup_s']:>8} {'-':>8} {fmt(w.get('host_busy')):>10}  {d['exit_codes']} {d['errors']}")
        continue
    w = d.get("window_cpu_s") or {}
    print(f"{d.get('recording','?'):<10} {d['n']:>5} {fmt(e['first']):>8} {fmt(e['p50']):>8} {fmt(e['p99']):>8} {fmt(e['last']):>8} {fmt(d['api_ms']):>8} {d['setup_s']:>8} {fmt(w.get('wardengate')):>8} {fmt(w.get('host_busy')):>10}  {d['terminated']}/{d['failed']} {d['exit_codes']} {d['errors']} {d.get('failed_sample') or ''}")
for d in docs:
    if "error" in d: print("run failed:", d["error"])
PY
echo
echo "wardengate peak RSS ${HWM:-?} MiB; gateway log: $(wc -l < "$TMP/wardengate.log") lines, $(noansi < "$TMP/wardengate.log" | grep -cw WARN) WARN, $(noansi < "$TMP/wardengate.log" | grep -cw ERROR) ERROR"
noansi < "$TMP/wardengate.log" | grep -wE 'WARN|ERROR' | tail -10
exit "$FAILED"   # 0 when every run completed (whatever the figures)
