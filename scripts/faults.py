#!/usr/bin/env python3
"""Fault runs: the service under load while its dependencies fail.

Starts the server binary (release by default) against a fresh database on
the local PostgreSQL and a private redis-server on a free port, drives it
with keep-alive clients (reads: GET /v1/me; acknowledged writes: POST
/v1/notes), and injects one fault per scenario:

  baseline      no fault
  pg-kill       every backend of the service's database terminated, 3 times
  pg-restart    the local PostgreSQL cluster restarted (skipped unless
                --pg-restart: it interrupts everyone using that cluster)
  redis-down    the private redis-server killed, then started again
  redis-hung    the private redis-server paused (CLIENT PAUSE ALL)
  slow-clients  200 connections that send a header byte a second
  sigterm       SIGTERM while clients run; clients behave like a load
                balancer and stop sending once /readyz answers 503

For each it reports requests sent, requests failed (no answer, or a 5xx
other than a clean 503), clean 503 refusals, acknowledged writes and how
many of them are missing when the database is read afterwards, and the
throughput of successful requests during the fault against the baseline.
With --write-docs the table replaces the one in docs/operations.md
(between the `faults:begin` and `faults:end` markers).

Not part of `cargo test`: it needs a release build and minutes of wall
time. Standard library only.
"""

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "fault-run passphrase 4711"
ADMIN_URL = os.environ.get("ADMIN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(sql, db=None):
    url = ADMIN_URL if db is None else ADMIN_URL.rsplit("/", 1)[0] + "/" + db
    out = subprocess.run(
        ["psql", url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


class Redis:
    def __init__(self):
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            if self.cli("PING") == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cli(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args],
                             capture_output=True, text=True)
        return out.stdout.strip()

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class Server:
    def __init__(self, binary, env):
        self.binary = binary
        self.env = env
        self.port = int(env["LISTEN_ADDR"].rsplit(":", 1)[1])
        self.proc = None

    def start(self, log):
        self.proc = subprocess.Popen([self.binary], env=self.env, stdout=log, stderr=log)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the server exited at start-up; see the log")
            try:
                if request(self.port, "GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server did not become ready")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def request(port, method, path, body=None, token=None, conn=None, timeout=10):
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        payload = r.read()
        return r.status, payload, dict((k.lower(), v) for k, v in r.getheaders())
    finally:
        if own:
            c.close()


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.sent = self.ok = self.failed = self.refused = 0
        self.acknowledged = []
        self.failures = {}

    def add(self, outcome, note_id=None, why=None):
        with self.lock:
            self.sent += 1
            if outcome == "ok":
                self.ok += 1
                if note_id:
                    self.acknowledged.append(note_id)
            elif outcome == "refused":
                self.refused += 1
            else:
                self.failed += 1
                self.failures[why] = self.failures.get(why, 0) + 1


class Load:
    """Keep-alive workers; each has its own account (the notes cap is per user)."""

    def __init__(self, port, tokens, lb_mode=False):
        self.port = port
        self.tokens = tokens
        self.stop = threading.Event()
        self.draining = threading.Event()
        self.tally = Tally()
        self.lb_mode = lb_mode
        self.threads = []

    def start(self):
        for token in self.tokens:
            t = threading.Thread(target=self.worker, args=(token,), daemon=True)
            t.start()
            self.threads.append(t)
        if self.lb_mode:
            t = threading.Thread(target=self.readiness_poller, daemon=True)
            t.start()
            self.threads.append(t)

    def readiness_poller(self):
        # Like a load balancer's health check: a fresh connection each time.
        while not self.stop.is_set():
            try:
                status = request(self.port, "GET", "/readyz", timeout=2)[0]
            except OSError:
                status = None
            if status != 200:
                self.draining.set()
                return
            time.sleep(0.1)

    def worker(self, token):
        conn = None
        rng = random.Random()
        while not self.stop.is_set() and not self.draining.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            write = rng.random() < 0.1
            try:
                if write:
                    marker = uuid.uuid4().hex
                    status, body, headers = request(
                        self.port, "POST", "/v1/notes",
                        {"title": f"fault {marker}", "body": "acknowledged write"},
                        token, conn)
                else:
                    status, body, headers = request(self.port, "GET", "/v1/me", None, token, conn)
            except (OSError, http.client.HTTPException) as e:
                self.tally.add("failed", why=f"no answer ({type(e).__name__})")
                conn.close()
                conn = None
                continue
            if headers.get("connection", "").lower() == "close":
                conn.close()
                conn = None
            if 200 <= status < 300:
                note_id = json.loads(body).get("id") if write else None
                self.tally.add("ok", note_id=note_id)
            elif status == 503 and "retry-after" in headers:
                self.tally.add("refused")
                time.sleep(0.05)
            else:
                self.tally.add("failed", why=f"HTTP {status}")
                if status >= 500:
                    time.sleep(0.05)
        if conn:
            conn.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(15)
        return self.tally


def sign_in(port, email):
    status, body, _ = request(port, "POST", "/v1/auth/login", {"email": email, "password": PASSWORD})
    if status != 200:
        raise RuntimeError(f"sign-in of {email}: HTTP {status} {body[:200]!r}")
    return json.loads(body)["access_token"]


def missing_writes(db, acknowledged):
    if not acknowledged:
        return 0
    present = set(psql("SELECT note_id FROM notes", db).split())
    return sum(1 for n in acknowledged if n not in present)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", help="server binary (default: build and use target/release/mobile-backend)")
    ap.add_argument("--seconds", type=float, default=8, help="length of each fault window")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--pg-restart", action="store_true", help="also restart the local PostgreSQL cluster")
    ap.add_argument("--only", help="comma-separated scenarios to run")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()

    binary = args.binary
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "mobile-backend")

    tmp = tempfile.mkdtemp(prefix="faults-")
    db = f"faults_{os.getpid()}"
    psql(f"CREATE DATABASE {db}")
    redis = Redis()
    redis.start()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "APP_ENV": "development",
        "DATABASE_URL": ADMIN_URL.rsplit("/", 1)[0] + "/" + db,
        "DATA_DIR": tmp,
        "LISTEN_ADDR": f"127.0.0.1:{free_port()}",
        "METRICS_ADDR": f"127.0.0.1:{free_port()}",
        "REDIS_URL": f"redis://127.0.0.1:{redis.port}",
        "REDIS_KEY_PREFIX": db,
        "MAIL_TRANSPORT": f"file:{tmp}/mail",
        "RUST_LOG": "warn",
        "LOG_FORMAT": "json",
        # The fault runs measure the service, not its limits.
        "RATE_LIMIT_READS": "1000000/60",
        "RATE_LIMIT_WRITES": "1000000/60",
        "RATE_LIMIT_CREDENTIALS": "100000/60",
        "RATE_LIMIT_CREDENTIALS_ACCOUNT": "100000/60",
        "RATE_LIMIT_REFRESH": "100000/60",
        "SHUTDOWN_GRACE_SECS": "2",
    }
    server = Server(binary, env)
    log = open(os.path.join(tmp, "server.log"), "ab")
    results = []
    try:
        server.start(log)
        emails = [f"load{i}@example.com" for i in range(args.workers)]
        for email in emails:
            subprocess.run([binary, "admin", "create", "--email", email, "--role", "user"],
                           input=PASSWORD + "\n", text=True, env=env, check=True,
                           capture_output=True)

        def tokens():
            return [sign_in(server.port, e) for e in emails]

        def run(name, fault, lb_mode=False):
            psql("DELETE FROM notes", db)
            load = Load(server.port, tokens(), lb_mode=lb_mode)
            load.start()
            time.sleep(1)
            before = load.tally.ok
            started = time.time()
            note = fault(load) or ""
            elapsed = time.time() - started
            during = load.tally.ok - before
            tally = load.finish()
            time.sleep(0.5)
            lost = missing_writes(db, tally.acknowledged)
            results.append({
                "scenario": name, "sent": tally.sent, "failed": tally.failed,
                "refused": tally.refused, "acknowledged": len(tally.acknowledged),
                "lost": lost, "rate": during / elapsed if elapsed else 0.0,
                "why": tally.failures, "note": note,
            })
            print(json.dumps(results[-1]), flush=True)

        def wait(load):
            time.sleep(args.seconds)

        def pg_kill(load):
            for _ in range(3):
                psql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                     f"WHERE datname = '{db}' AND pid <> pg_backend_pid()")
                time.sleep(args.seconds / 3)
            return "all backends terminated 3 times"

        def pg_restart(load):
            version = sorted(os.listdir("/etc/postgresql"))[-1]
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                           check=True)
            time.sleep(args.seconds)
            return "cluster restarted"

        def redis_down(load):
            redis.kill()
            time.sleep(args.seconds)
            redis.start()
            t0 = time.time()
            while time.time() - t0 < 10:
                try:
                    sign_in(server.port, emails[0])
                    return f"sign-in worked {time.time() - t0:.2f} s after Redis returned"
                except RuntimeError:
                    time.sleep(0.05)
            return "sign-in still failing 10 s after Redis returned"

        def redis_hung(load):
            redis.cli("CLIENT", "PAUSE", str(int(args.seconds * 1000)), "ALL")
            time.sleep(args.seconds)
            redis.cli("CLIENT", "UNPAUSE")
            return "CLIENT PAUSE ALL"

        def slow_clients(load):
            socks = []
            for _ in range(200):
                s = socket.create_connection(("127.0.0.1", server.port))
                s.sendall(b"GET /v1/me HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
            t0 = time.time()
            while time.time() - t0 < args.seconds:
                for s in socks:
                    try:
                        s.sendall(b"X")
                    except OSError:
                        pass
                time.sleep(1)
            for s in socks:
                s.close()
            return "200 connections, a header byte a second"

        def sigterm(load):
            time.sleep(1)
            server.proc.send_signal(signal.SIGTERM)
            code = server.proc.wait(90)
            return f"exit code {code}; clients stopped sending when /readyz said 503"

        baseline = None
        plan = [("baseline", wait, False), ("pg-kill", pg_kill, False)]
        if args.pg_restart:
            plan.append(("pg-restart", pg_restart, False))
        plan += [("redis-down", redis_down, False), ("redis-hung", redis_hung, False),
                 ("slow-clients", slow_clients, False), ("sigterm", sigterm, True)]
        only = set(args.only.split(",")) if args.only else None
        for name, fault, lb in plan:
            if only and name not in only and name != "baseline":
                continue
            run(name, fault, lb)
            if name == "baseline":
                baseline = results[-1]["rate"]
    finally:
        server.stop()
        redis.kill()
        log.close()
        try:
            psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        except subprocess.CalledProcessError:
            pass

    lines = [
        "| scenario | requests | failed | clean 503 | acknowledged writes | writes lost | successful req/s during the fault | against baseline | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        ratio = f"{100 * r['rate'] / baseline:.0f} %" if baseline else "-"
        why = "; ".join(f"{k}: {v}" for k, v in sorted(r["why"].items()))
        note = "; ".join(x for x in [r["note"], why] if x)
        lines.append(f"| {r['scenario']} | {r['sent']} | {r['failed']} | {r['refused']} | "
                     f"{r['acknowledged']} | {r['lost']} | {r['rate']:.0f} | {ratio} | {note} |")
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        path = os.path.join(ROOT, "docs", "operations.md")
        text = open(path).read()
        begin, end = "<!-- faults:begin -->", "<!-- faults:end -->"
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            _, tail = rest.split(end, 1)
            stamp = time.strftime("%Y-%m-%d", time.gmtime())
            text = f"{head}{begin}\n{table}\n\n(`scripts/faults`, {stamp}, {args.workers} workers, {args.seconds:g} s per fault)\n{end}{tail}"
            open(path, "w").write(text)
        else:
            print("docs/operations.md has no faults markers; not written", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
