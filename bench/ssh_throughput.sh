#!/usr/bin/env bash
# bench/ssh_throughput.sh — SSH throughput, gateway cost and keystroke latency of Wardengate,
# compared with plain OpenSSH. Run from the repo root:   bench/ssh_throughput.sh
#
# WHAT IT DOES (one run, loopback only, everything in a fresh temp dir, cleaned up on exit):
#   * builds the release binaries (`cargo build --release --bin wardengate --bin wgctl
#     --bin wg-bench`;
#     skip with WG_BENCH_NO_BUILD=1),
#   * starts two stock sshd (the TARGET, and a second one used as the ProxyJump host) with
#     temporary keys on free high ports, and `wardengate dev` (release, WARDENGATE_LOG=info,
#     its data dir — hence the recordings — inside the temp dir),
#   * configures through wgctl two targets on the same sshd/account (root)/vault key/pinned host
#     key: `bench-norec` (policy recording: off) and `bench-rec` (policy recording: full),
#   * writes one file of random bytes (1 GiB by default) and pushes it through four paths:
#       (a) direct      ssh root@target
#       (b) proxyjump   ssh -J jumphost root@target        (OpenSSH's own relay, the baseline)
#       (c) gw rec off  ssh admin@local:bench-norec@gateway
#       (d) gw rec on   ssh admin@local:bench-rec@gateway
#     upload:   ssh HOST 'cat > /dev/null' < FILE        download: ssh HOST 'cat FILE' > /dev/null
#     Client ciphers are OpenSSH's defaults (nothing forced; ssh -F uses only our small config
#     with host aliases, keys and host-key checking off). The negotiated ciphers are printed:
#     direct and ProxyJump get chacha20-poly1305 from the stock sshd; the gateway does not offer
#     it on CPUs with AES instructions, so its client leg gets an AES cipher (ARCHITECTURE.md).
#     WARDENGATE_CONNECTION_WORKERS (passed through to the gateway) compares runtime layouts.
#   * measures single-keystroke echo latency per path: `ssh -tt HOST cat` driven through pipes by
#     bench/ssh_bench_helper.py; one byte is written and timed until the remote PTY echoes it.
#     With socat installed, latency also runs through (e) a plain TCP relay to the target sshd
#     (`socat`, no SSH layer, no crypto): the floor of what any extra hop costs on this machine;
#     and through (f) a bare russh relay (`wg-bench russh-relay`: russh server + client,
#     forwarding inside their handlers, nothing of Wardengate): the floor of any russh relay.
#     The four paths run side by side and take turns keystroke by keystroke, so a change in the
#     machine's state during the run affects them alike.
#
# HOW TO READ THE OUTPUT
#   MB/s          10^6 bytes per second of wall clock for the whole `ssh` command, connection
#                 setup and (for the gateway) the policy decision and recording seal included.
#   gw CPU s/GiB  user+system CPU seconds of the `wardengate` process (all threads; it is
#                 all-in-one, the idle control plane included) per GiB moved, /proc/PID/stat.
#   gw peak RSS   VmHWM of `wardengate` during that transfer (reset with clear_refs=5 before).
#   host cores    average number of busy CPUs on the whole machine during the transfer (the
#                 client, both sshds and the gateway share the same cores on loopback: if this
#                 is ~= the core count, the run is CPU-bound and the MB/s reflect total CPU cost).
#   ratios        gateway MB/s divided by ProxyJump MB/s and by direct MB/s (1.00 = same speed).
#   latency       p50/p99 of the echo round trip in microseconds (client -> PTY echo -> client);
#                 "over direct" is the median of the per-round differences to direct ssh (the
#                 added latency, robust against drift between rounds).
#   A failed transfer prints FAILED/TIMEOUT/RSS-ABORT instead of a number, plus the gateway log.
#
# KNOBS (environment): WG_BENCH_SIZE_MIB (1024), WG_BENCH_TIMEOUT (seconds per transfer, 1800),
#   WG_BENCH_RSS_LIMIT_MB (abort a transfer if the gateway's RSS passes it, 8192),
#   WG_BENCH_LAT_N (500), WG_BENCH_LAT_PAUSE (seconds between keystrokes, 0.02),
#   WG_BENCH_NO_BUILD=1, WG_BENCH_KEEP=1 (keep the temp dir, e.g. to read the logs),
#   WG_BENCH_PHASES=1 (needs perf: traces the gateway's connection threads' syscalls for 10 s
#   of the latency run and splits its share of an echo into phases; the trace slows the
#   gateway paths by a few µs, so the headline comparison is best taken without it),
#   WG_BENCH_PAYLOAD=random|text (default random: binary, which a terminal-less channel records
#   as size + SHA-256; text: base64 lines, which recording stores in full as asciicast events).
# Needs: root (sshd logs in as root), openssh-server + client, python3, cargo.

set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPER="$REPO/bench/ssh_bench_helper.py"
BIN="$REPO/target/release"
SIZE_MIB=${WG_BENCH_SIZE_MIB:-1024}
SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))
XFER_TIMEOUT=${WG_BENCH_TIMEOUT:-1800}
RSS_LIMIT_KB=$(( ${WG_BENCH_RSS_LIMIT_MB:-8192} * 1024 ))
LAT_N=${WG_BENCH_LAT_N:-500}
LAT_PAUSE=${WG_BENCH_LAT_PAUSE:-0.02}
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)

noansi() { sed 's/\x1b\[[0-9;]*m//g'; }
log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- processes and cleanup
# Every daemon and transfer is started under `setsid`, so its process group id is its pid and
# cleanup can end exactly the groups this script started.
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

# ---------------------------------------------------------------- build
cd "$REPO" || die "no repo"
[ "$(id -u)" = 0 ] || die "run as root (the sshd targets log in as root)"
if [ "${WG_BENCH_NO_BUILD:-0}" != 1 ]; then
    log "cargo build --release --bin wardengate --bin wgctl --bin wg-bench (may wait for the cargo lock)"
    cargo build --release --bin wardengate --bin wgctl --bin wg-bench >&2 || die "release build failed"
fi
[ -x "$BIN/wardengate" ] && [ -x "$BIN/wgctl" ] || die "missing $BIN/wardengate or $BIN/wgctl"

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
TMP=$(mktemp -d /tmp/wg-bench.XXXXXX)
chmod 700 "$TMP"
mkdir -p "$TMP/keys" /run/sshd
log "temp dir $TMP"

# Disk: the file, plus the (d) recordings (asciicast text of random bytes is larger than the
# bytes: invalid UTF-8 becomes U+FFFD, control bytes become \u00XX escapes).
avail_kb=$(df -Pk "$TMP" | awk 'NR==2 {print $4}')
need_kb=$(( SIZE_BYTES / 1024 * 10 ))
log "disk: $(df -h "$TMP" | awk 'NR==2 {print $4 " free on " $6}'); want ~$(( need_kb / 1048576 )) GiB"
[ "$avail_kb" -ge "$need_kb" ] || log "WARNING: less free disk than 10x the file size; the recording run may fill it"

# ---------------------------------------------------------------- keys, sshd x2
for k in target_host jump_host target_account admin; do
    ssh-keygen -q -t ed25519 -N '' -C "bench-$k" -f "$TMP/keys/$k" || die ssh-keygen
done
cp "$TMP/keys/target_account.pub" "$TMP/keys/authorized_keys"

TPORT=$(free_port); JPORT=$(free_port); GWPORT=$(free_port); APIPORT=$(free_port)
while [ "$JPORT" = "$TPORT" ]; do JPORT=$(free_port); done

start_sshd() { # name port hostkey
    local name=$1 port=$2 hostkey=$3
    cat > "$TMP/sshd_$name.conf" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $hostkey
AuthorizedKeysFile $TMP/keys/authorized_keys
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
LogLevel DEBUG1
MaxStartups 100
MaxSessions 100
EOF
    setsid /usr/sbin/sshd -D -e -f "$TMP/sshd_$name.conf" </dev/null >/dev/null 2>"$TMP/sshd_$name.log" &
    PGIDS+=($!)
    wait_port "$port" 10 || { cat "$TMP/sshd_$name.log" >&2; die "sshd $name did not listen"; }
}
start_sshd target "$TPORT" "$TMP/keys/target_host"
start_sshd jump "$JPORT" "$TMP/keys/jump_host"
log "sshd target on 127.0.0.1:$TPORT, sshd jump host on 127.0.0.1:$JPORT"

# The floor of any relay (latency only): socat copying TCP bytes to the target sshd, no SSH
# layer, no crypto. What it adds over direct is what one extra process hop costs on this
# machine before any work is done in it.
RPORT=""
if command -v socat >/dev/null; then
    RPORT=$(free_port)
    setsid socat "TCP-LISTEN:$RPORT,bind=127.0.0.1,reuseaddr,fork,nodelay" "TCP:127.0.0.1:$TPORT,nodelay" \
        </dev/null >/dev/null 2>"$TMP/socat.log" &
    PGIDS+=($!)
    wait_port "$RPORT" 10 || { log "socat did not listen; no TCP relay floor"; RPORT=""; }
else
    log "socat not installed: no TCP relay floor in the latency table (apt-get install socat)"
fi

# The floor of a relay built on russh (latency only): `wg-bench russh-relay`, a russh server and
# client forwarding inside their handlers, with nothing of Wardengate (bench/src/russh_relay.rs).
# What the gateway adds over it is Wardengate's own cost; what it adds over (e) is russh's.
XPORT=""
if [ -x "$BIN/wg-bench" ]; then
    XPORT=$(free_port)
    while [ "$XPORT" = "$RPORT" ]; do XPORT=$(free_port); done
    setsid "$BIN/wg-bench" russh-relay --listen "127.0.0.1:$XPORT" --target "127.0.0.1:$TPORT" \
        --user root --identity "$TMP/keys/target_account" --host-key "$TMP/keys/jump_host" \
        </dev/null >/dev/null 2>"$TMP/russh_relay.log" &
    PGIDS+=($!)
    wait_port "$XPORT" 10 || { log "russh-relay did not listen; no russh relay floor"; XPORT=""; }
else
    log "no $BIN/wg-bench: no russh relay floor in the latency table (cargo build --release -p wg-bench)"
fi

# ---------------------------------------------------------------- wardengate dev (release)
WARDENGATE_LOG=info setsid "$BIN/wardengate" dev --data-dir "$TMP/data" \
    --ssh-addr "127.0.0.1:$GWPORT" --api-addr "127.0.0.1:$APIPORT" \
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
name: bench-norec
address: "127.0.0.1:$TPORT"
protocol: ssh
accounts:
  - name: root
    credential: vault/ssh/bench
hostKey: "$HOSTKEY"
---
kind: target
name: bench-rec
address: "127.0.0.1:$TPORT"
protocol: ssh
accounts:
  - name: root
    credential: vault/ssh/bench
hostKey: "$HOSTKEY"
---
kind: policy
name: bench-norec-off
subjects: [user:admin@local]
targets: {names: [bench-norec]}
protocols: [ssh]
recording: "off"
---
kind: policy
name: bench-rec-full
subjects: [user:admin@local]
targets: {names: [bench-rec]}
protocols: [ssh]
recording: full
EOF
"$WGCTL" apply -f "$TMP/bench.yaml" >&2 || die "wgctl apply failed"
"$WGCTL" vault put vault/ssh/bench --private-key-file "$TMP/keys/target_account" >&2 || die "wgctl vault put failed"

# ---------------------------------------------------------------- ssh client config
# Host aliases only; no cipher, MAC, KEX or compression setting, so OpenSSH's defaults apply.
# (ssh passes -F on to the ProxyJump child, so the jump leg uses the same file.)
CFG="$TMP/ssh_config"
cat > "$CFG" <<EOF
Host direct
    Port $TPORT
Host jumphost
    Port $JPORT
Host proxyjump
    Port $TPORT
    ProxyJump jumphost
Host tcprelay
    Port ${RPORT:-1}
Host russhrelay
    Port ${XPORT:-1}
Host gw-norec
    Port $GWPORT
    User admin@local:bench-norec
    IdentityFile $TMP/keys/admin
Host gw-rec
    Port $GWPORT
    User admin@local:bench-rec
    IdentityFile $TMP/keys/admin
Host *
    HostName 127.0.0.1
    User root
    IdentityFile $TMP/keys/target_account
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    BatchMode yes
    LogLevel ERROR
    ConnectTimeout 10
    ControlMaster no
    ControlPath none
EOF

PATHS=(direct proxyjump gw-norec gw-rec)
declare -A LABEL=([direct]="(a) direct ssh" [proxyjump]="(b) ssh ProxyJump" \
                  [gw-norec]="(c) gateway, rec off" [gw-rec]="(d) gateway, rec on" \
                  [tcprelay]="(e) TCP relay (socat)" [russhrelay]="(f) bare russh relay")
# Latency also runs through the two relay floors, when they are there.
LAT_PATHS=("${PATHS[@]}")
[ -n "$RPORT" ] && LAT_PATHS+=(tcprelay)
[ -n "$XPORT" ] && LAT_PATHS+=(russhrelay)
declare -A TGT=([gw-norec]=bench-norec [gw-rec]=bench-rec)

# ---------------------------------------------------------------- the data
FILE="$TMP/random.bin"
SMALL="$TMP/small.bin"
PAYLOAD=${WG_BENCH_PAYLOAD:-random}
if [ "$PAYLOAD" = text ]; then
    log "writing $SIZE_MIB MiB of base64 text"
    head -c $((SIZE_BYTES / 4 * 3)) /dev/urandom | base64 > "$FILE" || die "cannot write $FILE"
    truncate -s "$SIZE_BYTES" "$FILE" || die "cannot size $FILE"
else
    log "writing $SIZE_MIB MiB of random bytes"
    head -c "$SIZE_BYTES" /dev/urandom > "$FILE" || die "cannot write $FILE"
fi
head -c $((16 * 1024 * 1024)) "$FILE" > "$SMALL"
cat "$FILE" > /dev/null   # page cache
SMALL_SUM=$(sha256sum < "$SMALL" | cut -d' ' -f1)

# ---------------------------------------------------------------- probes: ciphers, integrity
declare -A CIPHER_CLIENT CIPHER_TARGET INTEGRITY
sshd_kex() { # log-file start-line: distinct ciphers sshd negotiated after that line
    tail -n +"$(( $2 + 1 ))" "$1" | grep -o 'kex: client->server cipher: [^ ]*' \
        | awk '{print $4}' | sort -u | paste -sd, -
}
for p in "${PATHS[@]}"; do
    tl=$(wc -l < "$TMP/sshd_target.log"); jl=$(wc -l < "$TMP/sshd_jump.log")
    if ! timeout 60 ssh -v -F "$CFG" "$p" true 2>"$TMP/probe_$p.err"; then
        tail -20 "$TMP/probe_$p.err" >&2
        die "probe connection through $p failed (gateway log: $(tail -5 "$TMP/wardengate.log"))"
    fi
    CIPHER_CLIENT[$p]=$(grep -o 'kex: server->client cipher: [^ ]*' "$TMP/probe_$p.err" \
        | awk '{print $4}' | paste -sd, -)
    t=$(sshd_kex "$TMP/sshd_target.log" "$tl"); j=$(sshd_kex "$TMP/sshd_jump.log" "$jl")
    CIPHER_TARGET[$p]="target sshd: ${t:--}${j:+; jump sshd: $j}"
    up=$(timeout 120 ssh -F "$CFG" "$p" 'sha256sum' < "$SMALL" | cut -d' ' -f1)
    down=$(timeout 120 ssh -F "$CFG" "$p" "cat $SMALL" | sha256sum | cut -d' ' -f1)
    INTEGRITY[$p]="up $([ "$up" = "$SMALL_SUM" ] && echo ok || echo MISMATCH), down $([ "$down" = "$SMALL_SUM" ] && echo ok || echo MISMATCH)"
done

# ---------------------------------------------------------------- measurement helpers
proc_cpu_ticks() { # utime+stime of a pid (whole thread group)
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
host_busy_ticks() { # busy and total jiffies of all CPUs
    awk '/^cpu / {t=0; for (i=2; i<=NF; i++) t+=$i; print t-$5-$6, t}' /proc/stat
}
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null; }

declare -A MBPS SECS CPU RSS BUSY NOTE SESS
# measure PATH DIR(up|down): one timed 1 GiB transfer
measure() {
    local p=$1 dir=$2 key="$1/$2" in out cmd
    if [ "$dir" = up ]; then cmd=(ssh -F "$CFG" "$p" 'cat > /dev/null'); in=$FILE
    else cmd=(ssh -F "$CFG" "$p" "cat $FILE"); in=/dev/null; fi
    local gw=0; [ -n "${TGT[$p]:-}" ] && gw=1
    if [ "$gw" = 1 ] && ! kill -0 "$WG_PID" 2>/dev/null; then
        NOTE[$key]="gateway not running"; MBPS[$key]=FAILED; return
    fi
    local c0=0 b0 tot0 b1 tot1
    if [ "$gw" = 1 ]; then c0=$(proc_cpu_ticks "$WG_PID"); echo 5 > "/proc/$WG_PID/clear_refs"; fi
    read -r b0 tot0 < <(host_busy_ticks)
    log "${LABEL[$p]}: $dir ${SIZE_MIB} MiB ..."
    local t0 t1 rc
    t0=$(date +%s%N)
    setsid "${cmd[@]}" <"$in" >/dev/null 2>"$TMP/xfer_${p}_$dir.err" &
    local xpid=$!
    PGIDS+=("$xpid")
    # Watchdog: progress every 30 s, abort on timeout or runaway gateway RSS.
    (
        local start=$SECONDS n=0 rss io
        while sleep 1; do
            n=$((n + 1))
            rss=$(status_kb "$WG_PID" VmRSS); rss=${rss:-0}
            if [ "$gw" = 1 ] && [ "$rss" -gt "$RSS_LIMIT_KB" ]; then
                echo "RSS-ABORT (gateway VmRSS ${rss} kB)" > "$TMP/abort"; kill -TERM -- "-$xpid" 2>/dev/null; exit
            fi
            if [ $((SECONDS - start)) -gt "$XFER_TIMEOUT" ]; then
                echo "TIMEOUT (${XFER_TIMEOUT}s)" > "$TMP/abort"; kill -TERM -- "-$xpid" 2>/dev/null; exit
            fi
            if [ $((n % 30)) = 0 ]; then
                if [ "$dir" = up ]; then io=$(awk '/^rchar/ {print $2}' "/proc/$xpid/io" 2>/dev/null)
                else io=$(awk '/^wchar/ {print $2}' "/proc/$xpid/io" 2>/dev/null); fi
                log "  ... ${n}s, client moved ~$(( ${io:-0} / 1000000 )) MB, gateway RSS $(( rss / 1024 )) MiB"
            fi
        done
    ) &
    local wdpid=$!
    wait "$xpid"; rc=$?
    t1=$(date +%s%N)
    kill "$wdpid" 2>/dev/null; wait "$wdpid" 2>/dev/null
    read -r b1 tot1 < <(host_busy_ticks)
    local secs; secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", (b - a) / 1e9}')
    SECS[$key]=$secs
    BUSY[$key]=$(awk -v b="$((b1 - b0))" -v t="$((tot1 - tot0))" -v n="$NCPU" 'BEGIN {printf "%.2f", t ? b / t * n : 0}')
    if [ "$gw" = 1 ] && kill -0 "$WG_PID" 2>/dev/null; then
        local c1; c1=$(proc_cpu_ticks "$WG_PID")
        CPU[$key]=$(awk -v d="$((c1 - c0))" -v hz="$CLK_TCK" -v sz="$SIZE_BYTES" 'BEGIN {printf "%.2f", d / hz / (sz / 1073741824)}')
        RSS[$key]=$(awk -v k="$(status_kb "$WG_PID" VmHWM)" 'BEGIN {printf "%.0f", k / 1024}')
    fi
    if [ -f "$TMP/abort" ]; then
        MBPS[$key]=$(cut -d' ' -f1 "$TMP/abort"); NOTE[$key]="$(cat "$TMP/abort") after ${secs}s"; rm -f "$TMP/abort"
    elif [ "$rc" != 0 ]; then
        MBPS[$key]=FAILED; NOTE[$key]="ssh exit $rc after ${secs}s: $(tail -c 300 "$TMP/xfer_${p}_$dir.err" | tr '\n' ' ')"
    else
        MBPS[$key]=$(awk -v s="$secs" -v sz="$SIZE_BYTES" 'BEGIN {printf "%.1f", sz / 1e6 / s}')
    fi
    if [ "${MBPS[$key]}" = FAILED ] || [ -n "${NOTE[$key]:-}" ]; then
        log "  ${NOTE[$key]}"
        if [ "$gw" = 1 ]; then log "  gateway log (last 40 lines):"; tail -40 "$TMP/wardengate.log" | noansi >&2; fi
    else
        log "  ${MBPS[$key]} MB/s in ${secs}s"
    fi
    if [ "$gw" = 1 ]; then
        # The session as the control plane recorded it (wait for it to leave the live list).
        for _ in $(seq 100); do
            [ "$("$WGCTL" session list -o json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["sessions"]))' 2>/dev/null)" = 0 ] && break
            sleep 0.2
        done
        "$WGCTL" session list --state closed --target "${TGT[$p]}" -o json > "$TMP/sess.json" 2>/dev/null
        SESS[$key]=$(python3 "$HELPER" session "$TMP/sess.json")
    fi
}

# ---------------------------------------------------------------- throughput runs
for p in "${PATHS[@]}"; do
    for d in up down; do measure "$p" "$d"; done
done

# Recordings of (d): size on disk and a verification of the seal.
REC_DU=$(du -sh "$TMP/data/recordings" 2>/dev/null | cut -f1)
VERIFY=()
for d in up down; do
    sid=$(echo "${SESS[gw-rec/$d]:-}" | cut -d' ' -f1)
    if [ -n "$sid" ] && [ "$sid" != - ]; then
        vs=$(date +%s%N)
        vout=$(timeout 900 "$WGCTL" recording verify "$sid" 2>&1 | tail -3 | tr '\n' ' ')
        vrc=$?
        ve=$(date +%s%N)
        VERIFY+=("$d $sid: rc=$vrc in $(awk -v a="$vs" -v b="$ve" 'BEGIN {printf "%.1f", (b - a) / 1e9}')s: $vout")
    fi
done

# ---------------------------------------------------------------- latency
declare -A LAT
log "keystroke echo latency, $LAT_N rounds over ${#LAT_PATHS[@]} paths (interleaved)"
LAT_ARGS=()
for p in "${LAT_PATHS[@]}"; do LAT_ARGS+=(-- ssh -F "$CFG" -e none -tt "$p" cat); done
# With WG_BENCH_PHASES=1, meanwhile, where the gateway's share of an echo goes: 10 s of its
# connection threads' syscalls (perf tracepoints), from 3 s into the run. Off by default: the
# trace costs the traced paths ~1 µs per syscall, so it would tilt the comparison above.
PERF_PID=""
if [ "${WG_BENCH_PHASES:-0}" = 1 ] && [ "$(uname -m)" = x86_64 ] && command -v perf >/dev/null; then
    (
        sleep 3
        tids=$(for t in /proc/"$WG_PID"/task/*; do
            [[ "$(cat "$t/comm" 2>/dev/null)" == wg-conn-* ]] && printf '%s,' "${t##*/}"; done)
        [ -n "$tids" ] && perf record -q -e raw_syscalls:sys_enter -e raw_syscalls:sys_exit \
            -t "${tids%,}" -o "$TMP/phases.data" -- sleep 10 >"$TMP/phases.log" 2>&1
    ) &
    PERF_PID=$!
fi
mapfile -t LAT_OUT < <(timeout 1800 python3 "$HELPER" latency "$LAT_N" "$LAT_PAUSE" "${LAT_ARGS[@]}" 2>&1)
PHASES=()
if [ -n "$PERF_PID" ]; then
    wait "$PERF_PID"
    [ -s "$TMP/phases.data" ] && mapfile -t PHASES < <(perf script -i "$TMP/phases.data" \
        -F tid,time,event,trace 2>/dev/null | python3 "$HELPER" phases)
fi
i=0
for p in "${LAT_PATHS[@]}"; do
    if [[ "${LAT_OUT[0]:-}" == ERROR* ]]; then LAT[$p]=${LAT_OUT[0]}; else LAT[$p]=${LAT_OUT[$i]:-ERROR no output}; fi
    i=$((i + 1))
done

# ---------------------------------------------------------------- report
ratio() { # a b
    awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else printf "-" }'
}
echo
echo "Wardengate SSH benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  $(uname -r)  ${NCPU} CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo))"
echo "load average at start: $LOAD0 (other work on the machine shows up in 'host cores')"
echo "$(ssh -V 2>&1), wardengate $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet 2>/dev/null || echo '+dirty') (release), file ${SIZE_MIB} MiB ${PAYLOAD}, loopback"
echo
echo "Throughput (MB/s = 10^6 B/s, wall clock incl. connection setup)"
printf '%-22s %-5s %9s %9s %13s %16s %11s\n' path dir seconds MB/s 'gw CPU s/GiB' 'gw peak RSS MiB' 'host cores'
for p in "${PATHS[@]}"; do
    for d in up down; do
        k="$p/$d"
        printf '%-22s %-5s %9s %9s %13s %16s %11s\n' "${LABEL[$p]}" "$d" "${SECS[$k]:--}" "${MBPS[$k]:--}" \
            "${CPU[$k]:--}" "${RSS[$k]:--}" "${BUSY[$k]:--}"
    done
done
echo
echo "Ratios of throughput (gateway MB/s / baseline MB/s)"
printf '%-22s %-5s %14s %11s\n' path dir gw/ProxyJump gw/direct
for p in gw-norec gw-rec; do
    for d in up down; do
        printf '%-22s %-5s %14s %11s\n' "${LABEL[$p]}" "$d" "$(ratio "${MBPS[$p/$d]}" "${MBPS[proxyjump/$d]}")" \
            "$(ratio "${MBPS[$p/$d]}" "${MBPS[direct/$d]}")"
    done
done
echo
echo "Keystroke echo latency (microseconds; ssh -tt HOST cat, one byte, ${LAT_PAUSE}s between; paths interleaved;"
echo "  over direct = median over rounds of (path sample - direct sample of the same round))"
printf '%-22s %9s %9s %7s %9s %9s %12s\n' path p50 p99 n min max "over direct"
for p in "${LAT_PATHS[@]}"; do
    if [[ "${LAT[$p]}" == ERROR* ]]; then printf '%-22s %s\n' "${LABEL[$p]}" "${LAT[$p]}"
    else read -r a b c e f g <<<"${LAT[$p]}"; printf '%-22s %9s %9s %7s %9s %9s %12s\n' "${LABEL[$p]}" "$a" "$b" "$c" "$e" "$f" "$g"; fi
done
if [ "${#PHASES[@]}" -gt 0 ]; then
    echo
    echo "Gateway share of an echo (p50 µs, from a perf trace of its connection threads' syscalls, both"
    echo "  gateway paths; wake = epoll_wait returns, read = the packet's recv, send = the other leg's send:"
    echo "  read->send is decrypt + relay + encrypt; keystroke in = after 5+ ms of quiet, caches cold)"
    printf '%-16s %6s %11s %11s %9s %9s\n' pass n wake-\>read read-\>send send total
    for l in "${PHASES[@]}"; do
        read -r k n a b c t <<<"$l"
        case $k in keystroke) k="keystroke in";; echo) k="echo out";; esac
        printf '%-16s %6s %11s %11s %9s %9s\n' "$k" "$n" "$a" "$b" "$c" "$t"
    done
elif [ "${WG_BENCH_PHASES:-0}" = 1 ]; then
    echo
    echo "(no gateway phase split: needs x86_64 and perf (apt-get install linux-perf), run as root)"
fi
echo
echo "Negotiated ciphers (OpenSSH client defaults; from ssh -v and the sshd logs)"
for p in "${PATHS[@]}"; do
    printf '%-22s client: %-62s %s\n' "${LABEL[$p]}" "${CIPHER_CLIENT[$p]:--}" "${CIPHER_TARGET[$p]}"
done
echo
echo "Integrity check (16 MiB through each path, sha256)"
for p in "${PATHS[@]}"; do printf '%-22s %s\n' "${LABEL[$p]}" "${INTEGRITY[$p]}"; done
echo
echo "Gateway sessions of the timed runs (id policy recording bytes status exit end)"
for p in gw-norec gw-rec; do
    for d in up down; do printf '%-22s %-5s %s\n' "${LABEL[$p]}" "$d" "${SESS[$p/$d]:--}"; done
done
echo "Recordings on disk: ${REC_DU:-?} in the data dir"
for v in "${VERIFY[@]}"; do echo "wgctl recording verify $v"; done
notes=0
for k in "${!NOTE[@]}"; do
    [ "$notes" = 0 ] && { echo; echo "Problems"; notes=1; }
    echo "  $k: ${NOTE[$k]}"
done
if [ "$notes" = 1 ]; then
    echo; echo "Gateway log (last 60 lines, WARDENGATE_LOG=info):"; tail -60 "$TMP/wardengate.log" | noansi
fi
echo
echo "Gateway log: $(wc -l < "$TMP/wardengate.log") lines, $(noansi < "$TMP/wardengate.log" | grep -cw WARN) WARN, $(noansi < "$TMP/wardengate.log" | grep -cw ERROR) ERROR"
noansi < "$TMP/wardengate.log" | grep -wE 'WARN|ERROR' | tail -20
[ "$notes" = 0 ]   # exit status: 0 when every transfer succeeded
