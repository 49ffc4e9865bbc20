#!/usr/bin/env python3
"""Peer benchmark: diffusers' AutoencoderKL encode and decode on the CPU.

Usage (after `python3 bench/make_sd_vae.py`):

    python3 bench/peers/pytorch_vae.py [DIR] [--runs N] [--threads T]

DIR defaults to bench/out/sd-vae-random and must hold config.json, the weights,
encode_in.safetensors (`x`) and decode_in.safetensors (`z`). float32, batch as stored (1),
torch.set_num_threads(T) (default 2), one warm-up call each, then the median of N timed calls
(default 5). Prints one JSON line:
{"encode_s": ..., "decode_s": ..., "runs": N, "threads": T, "torch": "...", "diffusers": "..."}.
encode_s times `vae.encode(x)` (encoder + quant_conv + the latent distribution);
decode_s times `vae.decode(z)` (post_quant_conv + decoder).
"""

import argparse
import json
import os
import sys

import diffusers
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file

from vae_common import DEFAULT_DIR, median_seconds


def load_input(model_dir, file, name):
    path = os.path.join(model_dir, file)
    if not os.path.isfile(path):
        sys.exit(f"{path} is missing: run bench/make_sd_vae.py first")
    tensors = load_file(path)
    if name not in tensors:
        sys.exit(f"{path} has no tensor named `{name}` (found: {sorted(tensors)})")
    return tensors[name].to(torch.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", nargs="?", default=DEFAULT_DIR)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per part (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--only", choices=["encode", "decode"],
                        help="time one part only (e.g. to measure the peak RSS of a decode)")
    args = parser.parse_args()
    if args.runs < 1 or args.threads < 1:
        sys.exit("--runs and --threads must be positive")

    torch.set_num_threads(args.threads)
    x = load_input(args.model_dir, "encode_in.safetensors", "x")
    z = load_input(args.model_dir, "decode_in.safetensors", "z")
    vae = AutoencoderKL.from_pretrained(args.model_dir, torch_dtype=torch.float32).eval()

    encode_s = decode_s = None
    with torch.inference_mode():
        if args.only != "decode":
            encode_s = round(median_seconds(lambda: vae.encode(x).latent_dist, args.runs), 6)
        if args.only != "encode":
            decode_s = round(median_seconds(lambda: vae.decode(z).sample, args.runs), 6)

    print(json.dumps({
        "peer": "pytorch",
        "encode_s": encode_s,
        "decode_s": decode_s,
        "runs": args.runs,
        "threads": args.threads,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }))


if __name__ == "__main__":
    main()
