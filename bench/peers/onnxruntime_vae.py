#!/usr/bin/env python3
"""Peer benchmark: ONNX Runtime (CPU) on diffusers' AutoencoderKL, exported with torch.onnx.

Usage (after `python3 bench/make_sd_vae.py` and `pip install -r bench/peers/requirements-ort.txt`):

    python3 bench/peers/onnxruntime_vae.py [DIR] [--runs N] [--threads T] [--size S]

DIR defaults to bench/out/sd-vae-random (config.json + diffusion_pytorch_model.safetensors, and
optionally encode_in.safetensors `x` / decode_in.safetensors `z`). This script installs nothing.

Export (untimed, cached): diffusers' AutoencoderKL is loaded in float32 and two graphs are exported
with torch.onnx.export (TorchScript exporter, opset 17, fixed shapes, batch 1) into DIR/onnx/:
  encoder_<H>x<W>.onnx  x [1,3,H,W] -> moments [1,8,H/8,W/8]  (encoder + quant_conv, i.e. the
                        parameters of vae.encode(x).latent_dist: mean = moments[:, :4],
                        logvar = clamp(moments[:, 4:], -30, 20) as diffusers computes them)
  decoder_<H>x<W>.onnx  z [1,4,H/8,W/8] -> sample [1,3,H,W]  (post_quant_conv + decoder,
                        i.e. vae.decode(z).sample)
A file is exported only when missing (delete DIR/onnx/ after changing the weights or torch).

Inputs: the stored x and z when x is [1,3,S,S] and z is [1,4,S/8,S/8]; otherwise (other --size, or
no stored inputs) x uniform in [-1,1] and z standard normal from torch.Generator seeded with 7.

Timing: one InferenceSession per graph on CPUExecutionProvider with intra_op_num_threads=T,
inter_op_num_threads=1, sequential execution, ORT_ENABLE_ALL graph optimizations (session creation
and optimization are untimed). One warm-up session.run each, then the median of N timed
session.run calls (wall clock, time.perf_counter): encode_s is the encoder graph, decode_s the
decoder graph. numpy in and out; no IO binding.

Check (untimed): the same inputs through diffusers in PyTorch (torch.set_num_threads(T)); the max
|ORT - PyTorch| of mean, logvar and sample is printed to stderr and included in the JSON, with the
tolerance 1e-4 * max(1, max|ref|) that bench/peers/check_outputs.py uses.

Prints one JSON line on stdout:
{"peer": "onnxruntime", "encode_s": ..., "decode_s": ..., "runs": N, "threads": T, "size": S,
 "onnxruntime": "...", "torch": "...", "diffusers": "...", "max_abs_diff": {...}, "ok": true}
"""

import argparse
import json
import os
import sys
import time

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
    import onnxruntime as ort
except ImportError:
    sys.exit("onnxruntime is not installed: pip install -r bench/peers/requirements-ort.txt")

OPSET = 17


def export(module, example, in_name, out_name, path):
    if os.path.isfile(path):
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            tmp,
            input_names=[in_name],
            output_names=[out_name],
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    os.replace(tmp, path)
    return True


def session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser, "ORT intra-op threads")
    args = parser.parse_args()
    vae, latent, x, z = load_model(args)
    h, w = x.shape[2], x.shape[3]

    cache = os.path.join(args.model_dir, "onnx")
    enc_path = os.path.join(cache, f"encoder_{h}x{w}.onnx")
    dec_path = os.path.join(cache, f"decoder_{h}x{w}.onnx")
    for module, example, names, path in (
        (EncoderMoments(vae), x, ("x", "moments"), enc_path),
        (DecoderSample(vae), z, ("z", "sample"), dec_path),
    ):
        start = time.perf_counter()
        if export(module.eval(), example, *names, path):
            print(f"exported {path} in {time.perf_counter() - start:.1f} s", file=sys.stderr)

    enc = session(enc_path, args.threads)
    dec = session(dec_path, args.threads)
    x_np, z_np = x.numpy(), z.numpy()
    encode_s = median_seconds(lambda: enc.run(None, {"x": x_np}), args.runs)
    decode_s = median_seconds(lambda: dec.run(None, {"z": z_np}), args.runs)

    moments = enc.run(None, {"x": x_np})[0]
    sample = dec.run(None, {"z": z_np})[0]
    with torch.inference_mode():
        dist = vae.encode(x).latent_dist
        ref_sample = vae.decode(z).sample
    report = {
        "mean": compare(moments[:, :latent], dist.mean),
        "logvar": compare(np.clip(moments[:, latent:], -30.0, 20.0), dist.logvar),
        "sample": compare(sample, ref_sample),
    }
    for name, r in report.items():
        print(f"{name}: max|ort - torch| = {r['max_abs_diff']:.3g} "
              f"(tolerance {r['tolerance']:.3g}) {'ok' if r['ok'] else 'FAIL'}", file=sys.stderr)

    print(json.dumps({
        "peer": "onnxruntime",
        "encode_s": round(encode_s, 6),
        "decode_s": round(decode_s, 6),
        "runs": args.runs,
        "threads": args.threads,
        "size": args.size,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "max_abs_diff": {name: r["max_abs_diff"] for name, r in report.items()},
        "ok": all(r["ok"] for r in report.values()),
    }))


if __name__ == "__main__":
    main()
