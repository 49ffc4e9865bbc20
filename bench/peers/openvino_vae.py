#!/usr/bin/env python3
"""Peer benchmark: OpenVINO (CPU plugin) on diffusers' AutoencoderKL, converted with ov.convert_model.

Usage (after `python3 bench/make_sd_vae.py` and `pip install -r bench/peers/requirements-openvino.txt`):

    python3 bench/peers/openvino_vae.py [DIR] [--runs N] [--threads T] [--size S]
                                        [--precision f32|default|both]

DIR defaults to bench/out/sd-vae-random. This script installs nothing and writes nothing.

Conversion (untimed): diffusers' AutoencoderKL is loaded in float32; the same two modules the ONNX
Runtime peer exports (encoder + quant_conv -> moments, post_quant_conv + decoder -> sample) are
converted in memory by `ov.convert_model` with the example input, fixed shapes, batch 1.

Precision: `f32` compiles with INFERENCE_PRECISION_HINT=f32. `default` sets no precision hint,
which is what OpenVINO's users get out of the box: on CPUs with AVX512_BF16 or AMX the CPU plugin
then infers in bfloat16, elsewhere in f32. The precision the compiled model reports is printed and
recorded (`precision`). `both` (the default) runs f32, then default, and prints one JSON line each.

Timing: core.compile_model(model, "CPU", {INFERENCE_NUM_THREADS: T, PERFORMANCE_HINT: LATENCY,
NUM_STREAMS: 1}) (compilation untimed), one infer request per graph; one warm-up infer each, then
the median of N timed `request.infer` calls (wall clock).

Check (untimed): the same inputs through diffusers in PyTorch; max |OpenVINO - PyTorch| of mean,
logvar (clamped to [-30, 20]) and sample, in the JSON. `ok` applies the f32 tolerance
1e-4 * max(1, max|ref|) of bench/peers/check_outputs.py when the model ran in f32; for a reduced
precision it is null (the error is recorded, not judged).

Prints one JSON line per precision on stdout:
{"peer": "openvino" | "openvino-default", "encode_s": ..., "decode_s": ..., "runs": N,
 "threads": T, "size": S, "precision": "f32" | "bf16" | ..., "openvino": "...", "torch": "...",
 "diffusers": "...", "max_abs_diff": {...}, "ok": true | false | null}
"""

import argparse
import json
import sys

import diffusers
import numpy as np
import torch
from vae_common import (
    DecoderSample,
    EncoderMoments,
    add_common_args,
    compare,
    load_model,
    median_seconds,
)

try:
    import openvino as ov
except ImportError:
    sys.exit("openvino is not installed: pip install -r bench/peers/requirements-openvino.txt")


def compile_graph(core, model, threads, precision):
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if precision == "f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = core.compile_model(model, "CPU", config)
    used = compiled.get_property("INFERENCE_PRECISION_HINT")
    return compiled, used.get_type_name() if hasattr(used, "get_type_name") else str(used)


def run_one(core, graphs, x_np, z_np, refs, args, precision, latent):
    enc, enc_precision = compile_graph(core, graphs[0], args.threads, precision)
    dec, dec_precision = compile_graph(core, graphs[1], args.threads, precision)
    if enc_precision != dec_precision:
        sys.exit(f"encoder compiled for {enc_precision}, decoder for {dec_precision}")
    enc_req, dec_req = enc.create_infer_request(), dec.create_infer_request()
    encode_s = median_seconds(lambda: enc_req.infer({0: x_np}), args.runs)
    decode_s = median_seconds(lambda: dec_req.infer({0: z_np}), args.runs)
    moments = enc_req.infer({0: x_np})[enc.output(0)]
    sample = dec_req.infer({0: z_np})[dec.output(0)]
    dist, ref_sample = refs
    report = {
        "mean": compare(moments[:, :latent], dist.mean),
        "logvar": compare(np.clip(moments[:, latent:], -30.0, 20.0), dist.logvar),
        "sample": compare(sample, ref_sample),
    }
    exact = enc_precision == "f32"
    for name, r in report.items():
        verdict = ("ok" if r["ok"] else "FAIL") if exact else "not judged"
        print(f"{precision} ({enc_precision}) {name}: max|openvino - torch| = "
              f"{r['max_abs_diff']:.3g} (f32 tolerance {r['tolerance']:.3g}) {verdict}",
              file=sys.stderr)
    return {
        "peer": "openvino" if precision == "f32" else "openvino-default",
        "encode_s": round(encode_s, 6),
        "decode_s": round(decode_s, 6),
        "runs": args.runs,
        "threads": args.threads,
        "size": args.size,
        "precision": enc_precision,
        "openvino": ov.__version__ if hasattr(ov, "__version__") else ov.get_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "max_abs_diff": {name: r["max_abs_diff"] for name, r in report.items()},
        "ok": all(r["ok"] for r in report.values()) if exact else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser, "INFERENCE_NUM_THREADS")
    parser.add_argument("--precision", choices=("f32", "default", "both"), default="both")
    args = parser.parse_args()
    vae, latent, x, z = load_model(args)

    with torch.no_grad():
        graphs = (
            ov.convert_model(EncoderMoments(vae).eval(), example_input=x, input=[tuple(x.shape)]),
            ov.convert_model(DecoderSample(vae).eval(), example_input=z, input=[tuple(z.shape)]),
        )
    with torch.inference_mode():
        refs = (vae.encode(x).latent_dist, vae.decode(z).sample)
    core = ov.Core()
    precisions = ("f32", "default") if args.precision == "both" else (args.precision,)
    for precision in precisions:
        line = run_one(core, graphs, x.numpy(), z.numpy(), refs, args, precision, latent)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
