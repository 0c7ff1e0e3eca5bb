#!/usr/bin/env python3
"""Helper for bench/terminate_latency.sh (standard library only).

Drives real OpenSSH clients through the gateway and times forced terminations from the client
side: each client is `ssh -F CONFIG HOST 'echo ready; exec cat'` with its stdin held open by this
process, so the session stays up until the gateway ends it. A client's disconnect is the moment
its `ssh` process exits, observed through a pidfd (os.pidfd_open) in one epoll loop, so a
thousand exits are timed without a thread per client. The API call runs on a worker thread
while the main thread watches the pidfds; both are timed from just before the request is sent
(time.monotonic).

Subcommands (common options: --api URL --token-file FILE --ssh-config FILE --host ALIAS
--target NAME --workdir DIR):
  single --n N [--pause S] [--seed S]
      Opens N sessions one after the other (each: start ssh, wait for "ready", find its new
      session ID in GET /api/v1/sessions?target=NAME), then terminates them one at a time in a
      shuffled order with POST /api/v1/sessions/{id}/terminate, S seconds apart. Prints the
      call -> client exit and call -> HTTP response distributions.
  mass --n N [--concurrency C] [--actor NAME]
      Opens N sessions (C connecting at a time), waits until the API lists them all active,
      then calls POST /api/v1/sessions/terminate {"actor": NAME, "reason": ...} once and times
      every client's exit from that call. Prints first/p50/p99/last client exit, the HTTP
      response time, the counts the API returned and the clients' exit codes.
  direct --n N [--concurrency C]
      The peer baseline of `mass`, without Wardengate: opens N sessions straight to the sshd
      target (--host names the direct alias), each `ssh HOST 'echo ready; exec cat < FIFO'`
      on one FIFO whose only writer is this process, then closes that writer: every remote
      `cat` reads EOF at the same instant, every sshd session ends and every client exits.
      Times each client's exit from the close. The same processes tear down as in `mass` (the
      sshd session and its `cat`, the client), so `last` is the floor this host sets for
      `mass`: what the clients and the target alone cost on the same cores.

The last line of stdout is one JSON object with the figures; progress goes to stderr.
"""

import argparse
import http.client
import json
import os
import random
import resource
import selectors
import subprocess
import sys
import threading
import time
import urllib.parse


def log(msg):
    print(f"[helper {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Api:
    """A tiny JSON client of the REST API (one connection per call: loopback, ~0.1 ms)."""

    def __init__(self, base, token):
        u = urllib.parse.urlparse(base)
        self.host, self.port, self.token = u.hostname, u.port, token

    def call(self, method, path, body=None, timeout=120):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Authorization": f"Bearer {self.token}"}
            if data is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                doc = json.loads(raw) if raw else None
            except ValueError:
                doc = {"raw": raw.decode(errors="replace")}
            return resp.status, doc
        finally:
            conn.close()

    def live_ids(self, target):
        status, doc = self.call("GET", "/api/v1/sessions?" + urllib.parse.urlencode({"target": target}))
        if status != 200:
            raise RuntimeError(f"GET /api/v1/sessions: HTTP {status}: {doc}")
        return {s["id"]: s["state"] for s in doc["sessions"]}


class Client:
    """One `ssh` client process."""

    def __init__(self, idx, argv, workdir):
        self.idx = idx
        self.err_path = os.path.join(workdir, f"client_{idx}.err")
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.buf = b""
        self.session = None
        self.exit_t = None

    def stderr_tail(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read()[-400:].decode(errors="replace").strip()
        except OSError:
            return ""


def open_clients(n, argv, workdir, concurrency, timeout, on_ready=None):
    """Starts n clients, at most `concurrency` connecting at once; returns them once all said
    "ready". on_ready(client) is called as each one does (in order of readiness)."""
    sel = selectors.DefaultSelector()
    ready, next_idx, connecting = [], 0, 0
    deadline = time.monotonic() + timeout
    last_log = time.monotonic()
    while len(ready) < n:
        while connecting < concurrency and next_idx < n:
            c = Client(next_idx, argv, workdir)
            sel.register(c.proc.stdout, selectors.EVENT_READ, c)
            next_idx += 1
            connecting += 1
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(ready)}/{n} clients ready after {timeout}s")
        for key, _ in sel.select(timeout=1.0):
            c = key.data
            try:
                chunk = os.read(key.fd, 4096)
            except BlockingIOError:
                continue
            if not chunk:
                sel.unregister(key.fileobj)
                c.proc.wait()
                raise RuntimeError(f"client {c.idx} exited with {c.proc.returncode} before "
                                   f"ready: {c.stderr_tail()}")
            c.buf += chunk
            if b"ready\n" in c.buf:
                sel.unregister(key.fileobj)
                connecting -= 1
                ready.append(c)
                if on_ready:
                    on_ready(c)
        if time.monotonic() - last_log > 10:
            log(f"  {len(ready)}/{n} clients ready")
            last_log = time.monotonic()
    sel.close()
    return ready


class ExitWatcher:
    """pidfds of the clients' processes, registered before the call is made (a pidfd of a
    process that already exited is readable at once, so nothing is missed, but its time would be
    late if it were opened after the exit)."""

    def __init__(self, clients):
        self.sel = selectors.DefaultSelector()
        self.left = 0
        for c in clients:
            fd = os.pidfd_open(c.proc.pid)
            self.sel.register(fd, selectors.EVENT_READ, c)
            self.left += 1

    def wait(self, timeout):
        """Waits until every client exited or the timeout; sets exit_t; returns how many are
        still running."""
        deadline = time.monotonic() + timeout
        while self.left:
            wait = deadline - time.monotonic()
            if wait <= 0:
                break
            events = self.sel.select(timeout=wait)
            now = time.monotonic()
            for key, _ in events:
                key.data.exit_t = now
                self.sel.unregister(key.fd)
                os.close(key.fd)
                self.left -= 1
        for key in list(self.sel.get_map().values()):
            self.sel.unregister(key.fd)
            os.close(key.fd)
        self.sel.close()
        return self.left


def raise_priority(mode):
    """The watcher times each exit when it gets to run: with a thousand clients and sshd sessions
    tearing down on two cores, a watcher at normal priority waits behind them and stamps exits
    late and in bunches. Raises this thread (and the threads it starts) above them; the clients,
    started before, keep theirs. Needs root (the bench runs as root); without it the figures
    are only upper bounds."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -15)
    except OSError as e:
        log(f"{mode}: cannot raise the watcher's priority ({e}); exit times are upper bounds")


def cpu_sample(pid):
    """(CPU seconds of process `pid` (all threads), busy and total CPU seconds of the host)."""
    hz = os.sysconf("SC_CLK_TCK")
    proc = 0.0
    if pid:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            proc = (int(fields[11]) + int(fields[12])) / hz
        except (OSError, IndexError, ValueError):
            proc = 0.0
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    total = sum(cpu)
    return proc, (total - cpu[3] - cpu[4]) / hz, total / hz


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    k = max(1, -(-len(s) * p // 100))  # nearest rank
    return s[int(k) - 1]


def ms(v):
    return None if v is None else round(v * 1000, 1)


def finish(clients):
    """Closes the clients' stdin, reaps them; returns a histogram of exit codes."""
    codes = {}
    for c in clients:
        try:
            c.proc.stdin.close()
        except OSError:
            pass
        try:
            rc = c.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            c.proc.kill()
            rc = c.proc.wait()
        c.proc.stdout.close()
        codes[str(rc)] = codes.get(str(rc), 0) + 1
    return codes


def single(args, api, argv):
    known = set(api.live_ids(args.target))
    clients = []

    def on_ready(c):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            new = [i for i in api.live_ids(args.target) if i not in known]
            if len(new) == 1:
                c.session = new[0]
                known.add(new[0])
                return
            if len(new) > 1:
                raise RuntimeError(f"several new sessions at once: {new}")
            time.sleep(0.02)
        raise RuntimeError(f"client {c.idx}: no new session listed within 10 s")

    t = time.monotonic()
    log(f"single: opening {args.n} sessions one after the other")
    clients = open_clients(args.n, argv, args.workdir, 1, 60 + args.n * 5, on_ready)
    setup = time.monotonic() - t
    log(f"single: {len(clients)} sessions open in {setup:.1f}s; terminating one at a time")
    order = list(clients)
    random.Random(args.seed).shuffle(order)
    exit_lat, api_lat, errors = [], [], []
    for i, c in enumerate(order):
        time.sleep(args.pause)
        result = {}

        def call(c=c, result=result):
            t0 = result["t0"] = time.monotonic()
            try:
                status, doc = api.call("POST", f"/api/v1/sessions/{c.session}/terminate",
                                       {"reason": "bench: single termination"})
            except Exception as e:  # reported with the figures, not raised in the thread
                status, doc = None, repr(e)
            result["t"] = time.monotonic() - t0
            result["status"], result["doc"] = status, doc

        watcher = ExitWatcher([c])
        th = threading.Thread(target=call)
        th.start()
        left = watcher.wait(30)
        th.join()
        if result.get("status") != 200:
            errors.append(f"{c.session}: HTTP {result.get('status')}: {result.get('doc')}")
        if left:
            errors.append(f"{c.session}: client still running 30 s after the call")
        else:
            exit_lat.append(c.exit_t - result["t0"])
        api_lat.append(result["t"])
        if (i + 1) % 50 == 0:
            log(f"  {i + 1}/{len(order)} terminated")
    codes = finish(clients)
    return {
        "mode": "single", "n": len(clients), "setup_s": round(setup, 1),
        "exit_ms": {"p50": ms(pct(exit_lat, 50)), "p90": ms(pct(exit_lat, 90)),
                    "p99": ms(pct(exit_lat, 99)), "max": ms(max(exit_lat, default=None)),
                    "min": ms(min(exit_lat, default=None))},
        "api_ms": {"p50": ms(pct(api_lat, 50)), "p90": ms(pct(api_lat, 90)),
                   "p99": ms(pct(api_lat, 99)), "max": ms(max(api_lat, default=None))},
        "exit_codes": codes, "errors": errors[:10], "error_count": len(errors),
    }


def mass(args, api, argv):
    t = time.monotonic()
    log(f"mass: opening {args.n} sessions, {args.concurrency} connecting at a time")
    clients = open_clients(args.n, argv, args.workdir, args.concurrency, 60 + args.n)
    setup = time.monotonic() - t
    log(f"mass: {len(clients)} clients ready in {setup:.1f}s; waiting for the API to list them active")
    want = min(args.n, 1000)  # the API answers at most 1000 sessions
    deadline = time.monotonic() + 60
    while True:
        states = api.live_ids(args.target)
        active = sum(1 for s in states.values() if s == "active")
        if active >= want:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {active}/{want} sessions active after 60 s")
        time.sleep(0.2)
    time.sleep(args.settle)
    result = {}

    def call():
        t0 = result["t0"] = time.monotonic()
        try:
            status, doc = api.call("POST", "/api/v1/sessions/terminate",
                                   {"reason": "bench: mass termination", "actor": args.actor},
                                   timeout=300)
        except Exception as e:  # reported with the figures, not raised in the thread
            status, doc = None, {"error": repr(e)}
        result["t"] = time.monotonic() - t0
        result["status"], result["doc"] = status, doc

    log(f"mass: POST /api/v1/sessions/terminate {{actor: {args.actor}}} for {len(clients)} sessions")
    raise_priority("mass")
    watcher = ExitWatcher(clients)
    cpu0 = cpu_sample(args.watch_pid)
    th = threading.Thread(target=call)
    th.start()
    left = watcher.wait(args.timeout)
    cpu1 = cpu_sample(args.watch_pid)  # at the last client's exit
    th.join()
    t0 = result["t0"]
    exits = [c.exit_t - t0 for c in clients if c.exit_t is not None]
    doc = result.get("doc") or {}
    codes = finish(clients)
    errors = []
    if result.get("status") != 200:
        errors.append(f"HTTP {result.get('status')}: {str(doc)[:300]}")
    if left:
        errors.append(f"{left} clients still running {args.timeout} s after the call")
    return {
        "mode": "mass", "n": len(clients), "setup_s": round(setup, 1),
        "exit_ms": {"first": ms(min(exits, default=None)), "p50": ms(pct(exits, 50)),
                    "p99": ms(pct(exits, 99)), "last": ms(max(exits, default=None))},
        "api_ms": ms(result.get("t")),
        "terminated": len(doc.get("terminated", [])) if isinstance(doc, dict) else None,
        "failed": len(doc.get("failed", [])) if isinstance(doc, dict) else None,
        "failed_sample": (doc.get("failed") or [])[:3] if isinstance(doc, dict) else None,
        "exit_codes": codes, "errors": errors, "still_running": left,
        # From the call to the last client's exit: CPU seconds of the watched process (the
        # all-in-one wardengate), and of the whole host (clients, sshd and cat included).
        "window_cpu_s": {"wardengate": round(cpu1[0] - cpu0[0], 2),
                         "host_busy": round(cpu1[1] - cpu0[1], 2)},
    }


def direct(args):
    """The peer baseline: N sessions straight to sshd, each running `cat` on one FIFO whose
    only writer is this process; closing it ends every session at the same instant."""
    fifo = os.path.join(args.workdir, "end.fifo")
    os.mkfifo(fifo, 0o600)
    # O_RDWR: opening a FIFO for writing would block until a reader comes; Linux allows a
    # read-write open, which makes this process the writer without waiting.
    writer = os.open(fifo, os.O_RDWR)
    argv = ["ssh", "-F", args.ssh_config, args.host, f"echo ready; exec cat < {fifo}"]
    t = time.monotonic()
    log(f"direct: opening {args.n} sessions straight to sshd, {args.concurrency} connecting at a time")
    clients = open_clients(args.n, argv, args.workdir, args.concurrency, 60 + args.n)
    setup = time.monotonic() - t
    # "ready" is printed just before the shell opens the FIFO: give the last ones time to.
    time.sleep(args.settle)
    log(f"direct: {len(clients)} clients ready in {setup:.1f}s; ending them all at once")
    raise_priority("direct")
    watcher = ExitWatcher(clients)
    cpu0 = cpu_sample(0)
    t0 = time.monotonic()
    os.close(writer)
    left = watcher.wait(args.timeout)
    cpu1 = cpu_sample(0)
    exits = [c.exit_t - t0 for c in clients if c.exit_t is not None]
    codes = finish(clients)
    errors = [f"{left} clients still running {args.timeout} s after the end"] if left else []
    return {
        "mode": "direct", "n": len(clients), "setup_s": round(setup, 1),
        "exit_ms": {"first": ms(min(exits, default=None)), "p50": ms(pct(exits, 50)),
                    "p99": ms(pct(exits, 99)), "last": ms(max(exits, default=None))},
        "exit_codes": codes, "errors": errors, "still_running": left,
        "window_cpu_s": {"host_busy": round(cpu1[1] - cpu0[1], 2)},
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["single", "mass", "direct"])
    p.add_argument("--api", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--ssh-config", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--pause", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--actor", default="admin@local")
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--label", default="-", help="recording mode, copied to the output")
    p.add_argument("--watch-pid", type=int, default=0,
                   help="a process whose CPU time is reported for the mass termination window")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.n * 4 + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, min(hard, 65536)), max(hard, need)))
    os.makedirs(args.workdir, exist_ok=True)
    with open(args.token_file) as f:
        api = Api(args.api, f.read().strip())
    argv = ["ssh", "-F", args.ssh_config, args.host, "echo ready; exec cat"]
    if args.mode == "single":
        out = single(args, api, argv)
    elif args.mode == "mass":
        out = mass(args, api, argv)
    else:
        out = direct(args)
    out["recording"] = args.label
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
