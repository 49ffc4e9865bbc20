#!/usr/bin/env python3
"""Compares mlhost's SD-size outputs with diffusers' on the same weights and inputs.

Usage: python3 bench/peers/check_outputs.py MODEL_DIR ENC.safetensors DEC.safetensors [REL]
Prints max|ours - ref| and the tolerance REL * max(1, max|ref|) for mean, logvar, sample. REL
defaults to 1e-4 (every optimization except Winograd); with Winograd convolutions on, the
issue's bound is 2e-3.
"""

import json
import sys

import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file


def main():
    model_dir, enc_path, dec_path = sys.argv[1:4]
    rel = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-4
    torch.set_num_threads(2)
    vae = AutoencoderKL.from_pretrained(model_dir).float().eval()
    x = load_file(f"{model_dir}/encode_in.safetensors")["x"]
    z = load_file(f"{model_dir}/decode_in.safetensors")["z"]
    with torch.no_grad():
        dist = vae.encode(x).latent_dist
        sample = vae.decode(z).sample
    ours = {**load_file(enc_path), **load_file(dec_path)}
    report = {}
    for name, ref in (("mean", dist.mean), ("logvar", dist.logvar), ("sample", sample)):
        diff = (ours[name] - ref).abs().max().item()
        tol = rel * max(1.0, ref.abs().max().item())
        report[name] = {"max_abs_diff": diff, "tolerance": tol, "ok": diff <= tol}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
