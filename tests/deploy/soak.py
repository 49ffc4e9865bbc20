#!/usr/bin/env python3
"""A soak: `mlhost serve` under steady load for a long time, its resident memory sampled.

One server (`--model-repository` holding the sd_like fixture compiled with its encoder) takes a
steady mix of requests from several client threads at a fixed total rate: JSON decode, JSON
encode, binary-tensor decode (each output checked against diffusers' within
1e-4 * max(1, |ref|)), a malformed request (must be 400), a request for an unknown model (404)
and model metadata. VmRSS of the server is read from /proc every few seconds. After the warm-up
(allocator pools and arenas reach their size), the RSS must stay within `--tolerance` (5%) of
its value at the end of the warm-up; every request must get its expected status and values.

    python3 tests/deploy/soak.py --mlhost target/debug/mlhost --plugin-dir target/debug \
        --minutes 30 --rate 20

Not run in CI (it takes as long as it is told to); RELIABILITY.md records a 30-minute run.
Standard library only; Linux (/proc).
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

from loopback import FIXTURE, close_to, copy_plugins, free_port, http, read_safetensors, wait_until


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def binary_body(name, shape, values):
    header = json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": "FP32",
                                     "parameters": {"binary_data_size": 4 * len(values)}}]})
    raw = struct.pack("<%df" % len(values), *values)
    return header.encode() + raw, {"Content-Type": "application/octet-stream",
                                   "Inference-Header-Content-Length": str(len(header))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mlhost", required=True)
    ap.add_argument("--plugin-dir", required=True)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--warmup-minutes", type=float, default=2.0)
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second, all clients")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--sample-seconds", type=float, default=5.0)
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--csv", help="write the RSS samples (seconds, KiB) here")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="mlhost-soak-")
    plugins = copy_plugins(args.plugin_dir, work)
    repo = os.path.join(work, "repo")
    os.makedirs(repo)
    subprocess.run([args.mlhost, "--plugin-dir", plugins, "compile", FIXTURE, "--uses-encoder",
                    "-o", os.path.join(repo, "vae")], check=True)
    io = read_safetensors(os.path.join(FIXTURE, "io.safetensors"))

    def bound(ref):
        return 1e-4 * max(1.0, max(abs(v) for v in ref))

    z_shape, z = io["z"]
    x_shape, x = io["x"]
    sample, mean, logvar = io["sample"][1], io["mean"][1], io["logvar"][1]
    decode_json = json.dumps({"inputs": [{"name": "z", "shape": z_shape, "datatype": "FP32",
                                          "data": z}]})
    encode_json = json.dumps({"inputs": [{"name": "x", "shape": x_shape, "datatype": "FP32",
                                          "data": x}]})
    decode_bin, bin_headers = binary_body("z", z_shape, z)
    bad_json = json.dumps({"inputs": [{"name": "z", "shape": [1, 4, 8, 9], "datatype": "FP32",
                                       "data": z[:288]}]})

    def outputs(data):
        return {o["name"]: o["data"] for o in json.loads(data)["outputs"]}

    # (name, method, path, body, headers, expected status, check of the body)
    kinds = [
        ("decode json", "POST", "/v2/models/vae.decode/infer", decode_json, None, 200,
         lambda d: close_to(outputs(d)["sample"], sample, bound(sample))),
        ("encode json", "POST", "/v2/models/vae.encode/infer", encode_json, None, 200,
         lambda d: close_to(outputs(d)["mean"], mean, bound(mean))
         and close_to(outputs(d)["logvar"], logvar, bound(logvar))),
        ("decode binary", "POST", "/v2/models/vae.decode/infer", decode_bin, bin_headers, 200,
         lambda d: close_to(outputs(d)["sample"], sample, bound(sample))),
        ("bad shape", "POST", "/v2/models/vae.decode/infer", bad_json, None, 400,
         lambda d: b"shape" in d),
        ("unknown model", "POST", "/v2/models/nope/infer", decode_json, None, 404, lambda d: True),
        ("metadata", "GET", "/v2/models/vae.decode", None, None, 200,
         lambda d: json.loads(d)["name"] == "vae.decode"),
    ]

    port = free_port()
    log = open(os.path.join(work, "server.log"), "wb")
    server = subprocess.Popen([args.mlhost, "serve", "--model-repository", repo, "--http-port",
                               str(port), "--plugin-dir", plugins],
                              stdout=log, stderr=subprocess.STDOUT)
    counts = {k[0]: [0, 0] for k in kinds}  # name -> [ok, failed]
    failures = []
    samples = []  # (seconds since load started, KiB)
    lock = threading.Lock()
    stop = threading.Event()
    try:
        wait_until("the server to be ready",
                   lambda: http(port, "GET", "/v2/health/ready", timeout=2)[0] == 200)
        t_start = time.monotonic()
        interval = args.clients / args.rate

        def client(index):
            n = index
            next_at = time.monotonic()
            while not stop.is_set():
                name, method, path, body, headers, want, check = kinds[n % len(kinds)]
                n += 1
                try:
                    status, data = http(port, method, path, body, headers=headers)
                    ok = status == want and check(data)
                except (OSError, ValueError, KeyError) as e:
                    status, data, ok = -1, str(e).encode(), False
                with lock:
                    counts[name][0 if ok else 1] += 1
                    if not ok and len(failures) < 20:
                        failures.append((name, status, data[:200]))
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        end = t_start + 60 * args.minutes
        while time.monotonic() < end and server.poll() is None:
            samples.append((time.monotonic() - t_start, rss_kib(server.pid)))
            time.sleep(args.sample_seconds)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t_start
        alive = server.poll() is None
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=60)

    if args.csv:
        with open(args.csv, "w") as f:
            f.write("seconds,rss_kib\n")
            f.writelines("%.1f,%d\n" % s for s in samples)
    warm = [s for s in samples if s[0] >= 60 * args.warmup_minutes]
    total = sum(ok + bad for ok, bad in counts.values())
    print("soak: %.1f min at %.1f req/s target, %d requests (%.1f/s), %d failed"
          % (args.minutes, args.rate, total, total / elapsed,
             sum(bad for _, bad in counts.values())))
    for name, (ok, bad) in counts.items():
        print("  %-14s %7d ok %5d failed" % (name, ok, bad))
    if not warm:
        sys.exit("soak: no RSS sample after the warm-up (run longer than --warmup-minutes)")
    base = warm[0][1]
    top = max(s[1] for s in warm)
    low = min(s[1] for s in warm)
    print("  RSS: %d KiB at load start, %d KiB after the %.1f-min warm-up, %d KiB at the end; "
          "after the warm-up min %d, max %d KiB (%+.2f%% / %+.2f%% of the warm-up value)"
          % (samples[0][1], base, args.warmup_minutes, samples[-1][1], low, top,
             100.0 * (low - base) / base, 100.0 * (top - base) / base))
    bad = False
    if not alive:
        print("soak: the server exited during the run (log %s)" % log.name)
        bad = True
    for f in failures:
        print("  failed: %s status %s: %r" % f)
        bad = True
    if top > base * (1 + args.tolerance) or low < base * (1 - args.tolerance):
        print("soak: RSS moved by more than %.0f%% after the warm-up" % (100 * args.tolerance))
        bad = True
    if bad:
        print("work directory kept: " + work)
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
