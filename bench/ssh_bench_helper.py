#!/usr/bin/env python3
"""Helper for bench/ssh_throughput.sh (standard library only).

Subcommands:
  latency N PAUSE_S -- SSH_ARGV... [-- SSH_ARGV...]...
      Runs each SSH_ARGV (an `ssh -tt HOST cat` command line, one per path) with stdin/stdout
      pipes and waits until each remote PTY echoes. Then N rounds (after 20 untimed ones): in
      each round, one byte per path in turn is written and timed until its echo comes back,
      PAUSE_S apart. Interleaving the paths keeps the machine's drift out of the comparison.
      Every 64 keystrokes a session gets a newline (untimed) and its copy of the line is
      drained, so the PTY's canonical line buffer never fills. Prints one line per path:
      `p50_us p99_us n min_us max_us diff_p50_us` (diff: median over rounds of this path's
      sample minus the first path's), or `ERROR reason`.
  session JSON_FILE
      Reads `wgctl session list -o json` output; prints the newest session as
      `id policy recording_mode recording_bytes recording_status exit_status end_reason`.
  phases
      Reads `perf script -F tid,time,event,trace` of raw_syscalls enter/exit events of the
      gateway's connection threads (recorded during `latency`) and splits each relayed echo
      packet into: wake (epoll_wait returns) -> read (first recv* enters) -> send (first
      send*/write* enters) -> sent (it returns). A pass that follows more than 5 ms of quiet on
      its thread is a keystroke going in (client -> target, caches cold); one that follows
      within 5 ms is the echo going out (target -> client). Prints, per kind,
      `kind n wake_to_read_p50 read_to_send_p50 send_p50 total_p50` in microseconds.
"""

import json
import math
import os
import select
import subprocess
import sys
import time


def read_until(fd, want: bytes, deadline: float, buf: bytearray) -> bool:
    """Reads from fd into buf until `want` is in buf or the deadline passes."""
    while want not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            return False
        chunk = os.read(fd, 65536)
        if not chunk:
            return False
        buf += chunk
    return True


def drain(fd, quiet_s: float, buf: bytearray) -> None:
    """Reads whatever arrives until the stream stays quiet for quiet_s."""
    while True:
        r, _, _ = select.select([fd], [], [], quiet_s)
        if not r:
            return
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        buf += chunk


def percentile(sorted_vals, p):
    """Nearest-rank percentile."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


class EchoSession:
    """One `ssh -tt HOST cat` whose PTY echoes single keystrokes back."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, bufsize=0)
        self.out_fd = self.proc.stdout.fileno()
        self.in_fd = self.proc.stdin.fileno()
        self.on_line = 0
        self.samples = []

    def wait_ready(self) -> bool:
        """Keeps poking a marker byte until the PTY echoes it (session fully up)."""
        buf = bytearray()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            os.write(self.in_fd, b"r")
            if read_until(self.out_fd, b"r", time.monotonic() + 1.0, buf):
                os.write(self.in_fd, b"\n")
                drain(self.out_fd, 0.3, buf)
                return True
        return False

    def keystroke(self):
        """Times one byte until its echo; returns microseconds or None after 10 s."""
        buf = bytearray()
        t0 = time.perf_counter_ns()
        os.write(self.in_fd, b"x")
        if not read_until(self.out_fd, b"x", time.monotonic() + 10, buf):
            return None
        t1 = time.perf_counter_ns()
        self.on_line += 1
        if self.on_line >= 64:
            # End the line (untimed): echo "\r\n" plus cat's copy of the line "x...x\r\n",
            # so the PTY's canonical line buffer never fills.
            os.write(self.in_fd, b"\n")
            buf = bytearray()
            read_until(self.out_fd, b"x" * self.on_line + b"\r\n", time.monotonic() + 10, buf)
            self.on_line = 0
        return (t1 - t0) / 1000.0

    def close(self):
        try:
            # End cat cleanly: a newline then ^D at the start of a line (EOF through the PTY).
            os.write(self.in_fd, b"\n\x04")
        except OSError:
            pass
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def latency(n: int, pause: float, argvs) -> int:
    """Interleaved echo latency: every round sends one keystroke on each path in turn (PAUSE_S
    after each), so drift of the machine's state hits all paths alike. Prints one line per
    path: `p50_us p99_us n min_us max_us diff_p50_us`, where diff_p50_us is the median over
    rounds of (this path's sample - the first path's sample of the same round)."""
    sessions = [EchoSession(argv) for argv in argvs]
    try:
        for i, s in enumerate(sessions):
            if not s.wait_ready():
                print(f"ERROR path {i}: no echo within 30s")
                return 1
        warmup = 20
        rounds = []
        for r in range(n + warmup):
            row = []
            for i, s in enumerate(sessions):
                us = s.keystroke()
                if us is None:
                    print(f"ERROR path {i}: echo {r} did not come back within 10s")
                    return 1
                row.append(us)
                time.sleep(pause)
            if r >= warmup:
                rounds.append(row)
        for i in range(len(sessions)):
            vals = sorted(row[i] for row in rounds)
            diffs = sorted(row[i] - row[0] for row in rounds)
            print(f"{percentile(vals, 50):.0f} {percentile(vals, 99):.0f} {len(vals)} "
                  f"{vals[0]:.0f} {vals[-1]:.0f} {percentile(diffs, 50):+.0f}")
        return 0
    finally:
        for s in sessions:
            s.close()


def session(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    sessions = data.get("sessions") or []
    if not sessions:
        print("- - - - - - -")
        return 0
    s = sessions[0]
    rec = s.get("recording") or {}

    def v(x):
        return "-" if x is None or x == "" else str(x)

    print(" ".join(v(x) for x in [s.get("id"), s.get("policy"), rec.get("mode"),
                                   rec.get("bytes"), rec.get("status"), s.get("exit_status"),
                                   s.get("end_reason")]))
    return 0


# Linux x86_64 syscall numbers used by `phases` (the shell script runs it on x86_64 only).
# Plain `write` is not a send here: on the connection threads it is tokio's eventfd wake-up.
EPOLL_WAITS = {232, 281, 441}      # epoll_wait, epoll_pwait, epoll_pwait2
READS = {0, 19, 45, 47}            # read, readv, recvfrom, recvmsg
SENDS = {20, 44, 46}               # writev, sendto, sendmsg
QUIET_US = 5000.0


def phases(lines) -> int:
    """See the module docstring: per-kind medians of the gateway's syscall-bounded phases."""
    import re
    pat = re.compile(r"\s*(\d+)\s+([\d.]+):\s+raw_syscalls:sys_(enter|exit):\s+NR (\d+)(?: = (-?\d+))?")
    state = {}  # tid -> dict(wake, read, send, last_end)
    out = {"keystroke": [], "echo": []}
    for line in lines:
        m = pat.match(line)
        if not m:
            continue
        tid, t, kind, nr = int(m.group(1)), float(m.group(2)) * 1e6, m.group(3), int(m.group(4))
        st = state.setdefault(tid, {"wake": None, "read": None, "send": None, "last": None})
        if kind == "exit" and nr in EPOLL_WAITS:
            if m.group(5) is not None and int(m.group(5)) > 0 and st["read"] is None:
                st["wake"] = t
        elif kind == "enter" and nr in READS and st["wake"] is not None and st["read"] is None:
            st["read"] = t
        elif kind == "enter" and nr in SENDS and st["read"] is not None and st["send"] is None:
            st["send"] = t
        elif kind == "exit" and nr in SENDS and st["send"] is not None:
            cold = st["last"] is None or st["wake"] - st["last"] > QUIET_US
            out["keystroke" if cold else "echo"].append(
                (st["read"] - st["wake"], st["send"] - st["read"], t - st["send"], t - st["wake"]))
            st.update(wake=None, read=None, send=None, last=t)
    for k in ("keystroke", "echo"):
        rows = out[k]
        if not rows:
            print(f"{k} 0 - - - -")
            continue
        med = [sorted(r[i] for r in rows)[len(rows) // 2] for i in range(4)]
        print(k, len(rows), " ".join(f"{v:.0f}" for v in med))
    return 0


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "latency":
        n, pause = int(sys.argv[2]), float(sys.argv[3])
        argvs, cur = [], None
        for a in sys.argv[4:]:
            if a == "--":
                cur = []
                argvs.append(cur)
            elif cur is None:
                break
            else:
                cur.append(a)
        if argvs and all(argvs):
            return latency(n, pause, argvs)
    if len(sys.argv) == 3 and sys.argv[1] == "session":
        return session(sys.argv[2])
    if len(sys.argv) == 2 and sys.argv[1] == "phases":
        return phases(sys.stdin)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
