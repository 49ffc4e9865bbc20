#!/usr/bin/env python3
"""Prints the summary table of bench/sd_vae.sh from its result files.

Usage: python3 bench/summarize.py RESULTS_DIR SIZE...
"""

import json
import os
import sys


def load(res, name):
    path = os.path.join(res, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read().strip().splitlines()
    return json.loads(text[-1]) if text else None


def main():
    res, sizes = sys.argv[1], sys.argv[2:]
    fma = open(os.path.join(res, "fma_peak.txt")).read().strip() if os.path.exists(
        os.path.join(res, "fma_peak.txt")) else "?"
    print(f"FMA peak: {fma}")
    for s in sizes:
        print(f"\n{s}x{s}")
        comp = load(res, f"ours-{s}-compile.json") or {}
        check = load(res, f"ours-{s}-check.json") or {}
        proc = load(res, f"ours-{s}-decode-process.json") or {}
        tproc = load(res, f"pytorch-{s}-decode-process.json") or {}
        ours = {m: load(res, f"ours-{s}-{m}.json") for m in ("encode", "decode")}
        peers = {p: load(res, f"{p}-{s}.json") for p in ("pytorch", "ort", "openvino", "openvino-default", "candle")}
        print(f"| method | ours (median s) | GFLOP/s | " +
              " | ".join(f"{p} (s) | ours vs {p}" for p in peers if peers[p]) + " |")
        for m in ("encode", "decode"):
            o = ours[m]
            if not o:
                continue
            row = f"| {m} | {o['median_s']:.3f} (min {o['min_s']:.3f}, {o['runs']} runs) | " \
                  f"{o.get('effective_gflops') or 0:.0f} |"
            for p, v in peers.items():
                if not v:
                    continue
                t = v.get(f"{m}_s")
                row += f" {t:.3f} | {t / o['median_s']:.2f}x |" if t else " - | - |"
            print(row)
        if ours["decode"]:
            print(f"load (export=false) {ours['decode']['load_s']:.3f} s, "
                  f"compile {comp.get('compile_s', float('nan')):.1f} s")
        if proc:
            line = f"decode process: ours {proc['wall_s']} s, peak RSS {proc['rss_kib'] / 1024:.0f} MiB"
            if tproc:
                line += (f"; PyTorch {tproc['wall_s']} s, peak RSS {tproc['rss_kib'] / 1024:.0f} MiB"
                         f" (ours {100 * proc['rss_kib'] / tproc['rss_kib']:.0f}%)")
            print(line)
        for p, v in peers.items():
            if v and "precision" in v:
                print(f"{p} ran in {v['precision']}; max |{p} - diffusers|: " + ", ".join(
                    f"{k} {d:.2e}" for k, d in v["max_abs_diff"].items()))
        if check:
            print("accuracy vs diffusers (2e-3 * max(1, max|ref|)): " + ", ".join(
                f"{k} {v['max_abs_diff']:.2e} (tol {v['tolerance']:.2e}, {'ok' if v['ok'] else 'FAIL'})"
                for k, v in check.items()))


if __name__ == "__main__":
    main()
