#!/usr/bin/env python3
"""Load generator for `mlhost serve` (or any Open Inference Protocol v2 server), loopback only.

For each concurrency level, that many client threads (one keep-alive connection each) send
inference requests with seeded random inputs until `--requests` have completed or `--seconds`
have passed, and the level's throughput and p50/p99 latency are printed. Binary tensors
(Triton's extension) by default, `--json` for JSON tensors. Standard library only.

  python3 bench/load/loadgen.py --port 8080 --model vae.decode --concurrency 1,4,16
"""

import argparse
import http.client
import json
import random
import struct
import threading
import time


def build_request(shape, binary, seed):
    rng = random.Random(seed)
    n = 1
    for d in shape:
        n *= d
    data = [rng.gauss(0.0, 1.0) for _ in range(n)]
    name = INPUT_NAME
    if not binary:
        body = json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": "FP32", "data": data}]})
        return body.encode(), {"Content-Type": "application/json"}
    header = json.dumps({
        "inputs": [{"name": name, "shape": shape, "datatype": "FP32",
                    "parameters": {"binary_data_size": 4 * n}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    body = header + struct.pack("<%df" % n, *data)
    return body, {"Inference-Header-Content-Length": str(len(header)),
                  "Content-Type": "application/octet-stream"}


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[i]


def run_level(args, concurrency, body, headers):
    path = f"/v2/models/{args.model}/infer"
    lock = threading.Lock()
    latencies, statuses = [], {}
    issued = [0]
    deadline = time.monotonic() + args.seconds

    def worker():
        conn = http.client.HTTPConnection(args.host, args.port, timeout=args.client_timeout)
        while True:
            with lock:
                if issued[0] >= args.requests or time.monotonic() >= deadline:
                    break
                issued[0] += 1
            start = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as e:
                status = type(e).__name__
                conn.close()
                conn = http.client.HTTPConnection(args.host, args.port, timeout=args.client_timeout)
            elapsed = time.perf_counter() - start
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(elapsed)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    ok = len(latencies)
    return {
        "concurrency": concurrency,
        "requests_ok": ok,
        "statuses": statuses,
        "seconds": round(wall, 3),
        "throughput_rps": round(ok / wall, 2) if wall > 0 else 0.0,
        "items_per_s": round(ok * args.batch / wall, 2) if wall > 0 else 0.0,
        "p50_ms": round(1000 * percentile(latencies, 0.50), 2),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 2),
    }


def main():
    global INPUT_NAME
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="must be a loopback address")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--model", default="vae.decode")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--requests", type=int, default=200, help="per level, at most")
    p.add_argument("--seconds", type=float, default=30.0, help="per level, at most")
    p.add_argument("--batch", type=int, default=1, help="items per request")
    p.add_argument("--warmup", type=int, default=2, help="requests before measuring")
    p.add_argument("--client-timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument("--json", action="store_true", help="JSON tensors instead of binary")
    args = p.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("the load generator only targets loopback")

    conn = http.client.HTTPConnection(args.host, args.port, timeout=30)
    conn.request("GET", f"/v2/models/{args.model}")
    resp = conn.getresponse()
    meta = json.loads(resp.read())
    if resp.status != 200:
        p.error(f"model metadata: {resp.status} {meta}")
    inp = meta["inputs"][0]
    INPUT_NAME = inp["name"]
    shape = [args.batch] + inp["shape"][1:]
    body, headers = build_request(shape, not args.json, seed=0)
    for _ in range(args.warmup):
        conn.request("POST", f"/v2/models/{args.model}/infer", body=body, headers=headers)
        conn.getresponse().read()
    conn.close()

    print(f"model {args.model} input {INPUT_NAME} {shape} ({'JSON' if args.json else 'binary'}), "
          f"<= {args.requests} requests / {args.seconds} s per level")
    print(f"{'conc':>5} {'ok':>6} {'req/s':>8} {'items/s':>8} {'p50 ms':>8} {'p99 ms':>8}  statuses")
    for c in [int(v) for v in args.concurrency.split(",")]:
        r = run_level(args, c, body, headers)
        print(f"{c:>5} {r['requests_ok']:>6} {r['throughput_rps']:>8} {r['items_per_s']:>8} "
              f"{r['p50_ms']:>8} {r['p99_ms']:>8}  {r['statuses']}")


INPUT_NAME = "z"

if __name__ == "__main__":
    main()
