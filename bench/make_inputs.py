#!/usr/bin/env python3
"""Makes a benchmark directory for another image size that shares a model's weights.

Usage: python3 bench/make_inputs.py SRC_DIR DST_DIR SIZE

DST_DIR gets symlinks to SRC_DIR's config.json and diffusion_pytorch_model.safetensors, plus
encode_in.safetensors (`x` [1, 3, SIZE, SIZE], uniform in [-1, 1]) and decode_in.safetensors
(`z` [1, latent_channels, SIZE / f, SIZE / f], standard normal), seeded by SIZE. Existing
inputs of the right shape are kept.
"""

import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    src, dst, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    vsf = 2 ** (len(cfg["block_out_channels"]) - 1)
    if size <= 0 or size % vsf:
        sys.exit(f"SIZE must be a positive multiple of {vsf}")
    os.makedirs(dst, exist_ok=True)
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        link = os.path.join(dst, name)
        if not os.path.exists(link):
            os.symlink(os.path.abspath(os.path.join(src, name)), link)
    shapes = {"x": (1, cfg["in_channels"], size, size),
              "z": (1, cfg["latent_channels"], size // vsf, size // vsf)}
    gen = torch.Generator().manual_seed(size)
    for file, name in (("encode_in.safetensors", "x"), ("decode_in.safetensors", "z")):
        path = os.path.join(dst, file)
        if os.path.exists(path) and tuple(load_file(path)[name].shape) == shapes[name]:
            continue
        if name == "x":
            t = torch.rand(shapes[name], generator=gen) * 2.0 - 1.0
        else:
            t = torch.randn(shapes[name], generator=gen)
        save_file({name: t.contiguous()}, path)


if __name__ == "__main__":
    main()
