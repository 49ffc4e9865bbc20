#!/usr/bin/env python3
"""A rolling restart, the way a Kubernetes rollout treats replicas, on loopback.

Three `mlhost serve --model-repository` replicas run behind HAProxy, which health-checks each on
/v2/health/ready and retries a request on another replica when a connection is refused or a
replica answers 503. Under a bounded load of concurrent infer requests, each replica in turn gets
SIGTERM (it must stop being ready, drain and exit 0) and is started again. Every request must end
200 with the right tensor (diffusers' decode of the fixture latent, within 1e-4 * max(1, |ref|)).

    python3 tests/deploy/rolling_restart.py --mlhost target/debug/mlhost --plugin-dir target/debug

`--plugin-dir` is where librbln_npu.so and librbln_vae.so are (they are copied aside). Needs
haproxy on PATH (Debian package `haproxy`; .ci/run installs it). Standard library only.
Prints the figures DEPLOY.md records: requests, failures, latency p50 / p99 during the roll.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from loopback import FIXTURE, close_to, copy_plugins, free_port, http, read_safetensors, wait_until


class Replica:
    def __init__(self, args, repo, port, log_dir, index):
        self.args, self.repo, self.port = args, repo, port
        self.log = os.path.join(log_dir, "replica%d.log" % index)
        self.proc = None

    def start(self):
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [self.args.mlhost, "serve", "--model-repository", self.repo,
             "--http-port", str(self.port), "--plugin-dir", self.args.plugin_dir],
            stdout=log, stderr=subprocess.STDOUT)
        wait_until("replica on port %d to be ready" % self.port,
                   lambda: http(self.port, "GET", "/v2/health/ready", timeout=2)[0] == 200)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=120)
        if code != 0:
            sys.exit("rolling restart: replica on port %d exited %d after SIGTERM (log %s)"
                     % (self.port, code, self.log))


HAPROXY_CFG = """
global
    maxconn 256
    tune.bufsize 65536
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout queue 60s
    retries 20
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 503
    option http-buffer-request
listen stats
    bind 127.0.0.1:{stats}
    stats enable
    stats uri /stats
frontend infer
    bind 127.0.0.1:{front}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /v2/health/ready
    http-check expect status 200
    timeout check 10s
    default-server inter 100ms fastinter 50ms downinter 100ms fall 3 rise 1
{servers}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mlhost", required=True)
    ap.add_argument("--plugin-dir", required=True)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--min-requests", type=int, default=300)
    args = ap.parse_args()
    if shutil.which("haproxy") is None:
        sys.exit("rolling restart: haproxy is not installed (apt-get install haproxy)")

    work = tempfile.mkdtemp(prefix="mlhost-rolling-")
    args.plugin_dir = copy_plugins(args.plugin_dir, work)
    repo = os.path.join(work, "repo")
    os.makedirs(repo)
    subprocess.run([args.mlhost, "--plugin-dir", args.plugin_dir, "compile", FIXTURE,
                    "-o", os.path.join(repo, "vae")], check=True)
    io = read_safetensors(os.path.join(FIXTURE, "io.safetensors"))
    z_shape, z = io["z"]
    ref_shape, ref = io["sample"]
    body = json.dumps({"inputs": [{"name": "z", "shape": z_shape, "datatype": "FP32", "data": z}]})
    bound = 1e-4 * max(1.0, max(abs(v) for v in ref))

    replicas = [Replica(args, repo, free_port(), work, i) for i in range(3)]
    for r in replicas:
        r.start()
    front, stats = free_port(), free_port()

    def server_up(i):
        """HAProxy's own view (its stats CSV): is replica i UP for its health checks?"""
        status, data = http(stats, "GET", "/stats;csv", timeout=2)
        for line in data.decode().splitlines():
            cols = line.split(",")
            if len(cols) > 17 and cols[0] == "replicas" and cols[1] == "r%d" % i:
                return cols[17] == "UP"
        return False
    servers = "\n".join("    server r%d 127.0.0.1:%d check" % (i, r.port)
                        for i, r in enumerate(replicas))
    cfg = os.path.join(work, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(HAPROXY_CFG.format(front=front, stats=stats, servers=servers))
    haproxy = subprocess.Popen(["haproxy", "-f", cfg, "-db"],
                               stdout=open(os.path.join(work, "haproxy.log"), "wb"),
                               stderr=subprocess.STDOUT)
    try:
        wait_until("haproxy to see every replica up", lambda: all(server_up(i) for i in range(3)))

        results = []  # (phase, status, seconds, ok)
        lock = threading.Lock()
        phase = ["before"]
        stop = threading.Event()

        def client():
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    status, data = http(front, "POST", "/v2/models/vae.decode/infer", body)
                except OSError as e:
                    status, data = -1, str(e).encode()
                dt = time.monotonic() - t0
                ok = False
                if status == 200:
                    out = json.loads(data)["outputs"][0]
                    ok = out["shape"] == ref_shape and close_to(out["data"], ref, bound)
                with lock:
                    results.append((phase[0], status, dt, ok, data[:200] if not ok else b""))

        threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
        for t in threads:
            t.start()
        wait_until("requests before the roll", lambda: len(results) >= 20)
        phase[0] = "roll"
        for i, r in enumerate(replicas):
            r.stop()
            wait_until("haproxy to mark replica %d down" % i, lambda: not server_up(i))
            r.start()
            # A rollout waits for the new replica's readiness before taking the next one down.
            wait_until("haproxy to mark replica %d up" % i, lambda: server_up(i))
        phase[0] = "after"
        wait_until("enough requests", lambda: len(results) >= args.min_requests, limit_s=600)
        stop.set()
        for t in threads:
            t.join()
    finally:
        haproxy.terminate()
        haproxy.wait()
        for r in replicas:
            if r.proc and r.proc.poll() is None:
                r.proc.kill()

    failed = [x for x in results if not x[3]]
    roll = sorted(x[2] for x in results if x[0] == "roll")
    def pct(xs, p):
        return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")
    print("rolling restart: %d requests (%d during the roll), %d failed; during the roll "
          "p50 %.1f ms, p99 %.1f ms; overall p50 %.1f ms, p99 %.1f ms"
          % (len(results), len(roll), len(failed), 1e3 * pct(roll, 0.5), 1e3 * pct(roll, 0.99),
             1e3 * pct(sorted(x[2] for x in results), 0.5),
             1e3 * pct(sorted(x[2] for x in results), 0.99)))
    if failed:
        for f in failed[:10]:
            print("  failed: phase %s status %s: %r" % (f[0], f[1], f[4]))
        print("logs in " + work)
        sys.exit(1)
    if len(roll) == 0:
        sys.exit("rolling restart: no request ran during the roll")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
