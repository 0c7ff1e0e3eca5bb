#!/usr/bin/env python3
"""Helper for bench/ssh_throughput.sh (standard library only).

Subcommands:
  latency N PAUSE_S -- SSH_ARGV...
      Runs SSH_ARGV (an `ssh -tt HOST cat` command line) with stdin/stdout pipes, waits until
      the remote PTY echoes, then N times: writes one byte, times until its echo comes back,
      sleeps PAUSE_S. Every 64 keystrokes it sends a newline (untimed) and drains cat's copy of
      the line, so the PTY's canonical line buffer never fills. Prints one line:
      `p50_us p99_us n min_us max_us` (or `ERROR reason`).
  session JSON_FILE
      Reads `wgctl session list -o json` output; prints the newest session as
      `id policy recording_mode recording_bytes recording_status exit_status end_reason`.
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


def latency(n: int, pause: float, argv) -> int:
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, bufsize=0)
    out_fd = proc.stdout.fileno()
    in_fd = proc.stdin.fileno()
    try:
        # Readiness: keep poking a marker byte until the PTY echoes it (session fully up).
        buf = bytearray()
        ready = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            os.write(in_fd, b"r")
            if read_until(out_fd, b"r", time.monotonic() + 1.0, buf):
                ready = True
                break
        if not ready:
            print("ERROR no echo within 30s")
            return 1
        os.write(in_fd, b"\n")
        drain(out_fd, 0.3, buf)

        samples = []
        on_line = 0
        warmup = 20
        for i in range(n + warmup):
            buf = bytearray()
            t0 = time.perf_counter_ns()
            os.write(in_fd, b"x")
            if not read_until(out_fd, b"x", time.monotonic() + 10, buf):
                print(f"ERROR echo {i} did not come back within 10s")
                return 1
            t1 = time.perf_counter_ns()
            if i >= warmup:
                samples.append((t1 - t0) / 1000.0)
            on_line += 1
            if on_line >= 64:
                # End the line (untimed): echo "\r\n" plus cat's copy of the line "x...x\r\n".
                os.write(in_fd, b"\n")
                buf = bytearray()
                read_until(out_fd, b"x" * on_line + b"\r\n", time.monotonic() + 10, buf)
                on_line = 0
            time.sleep(pause)
        samples.sort()
        print(f"{percentile(samples, 50):.0f} {percentile(samples, 99):.0f} {len(samples)} "
              f"{samples[0]:.0f} {samples[-1]:.0f}")
        return 0
    finally:
        try:
            # End cat cleanly: a newline then ^D at the start of a line (EOF through the PTY).
            os.write(in_fd, b"\n\x04")
        except OSError:
            pass
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "latency":
        n, pause = int(sys.argv[2]), float(sys.argv[3])
        assert sys.argv[4] == "--"
        return latency(n, pause, sys.argv[5:])
    if len(sys.argv) == 3 and sys.argv[1] == "session":
        return session(sys.argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
