#!/usr/bin/env python3
"""Writes a tiny random-weight VAE (bench/out/random-tiny-vae/) and the demo picture
(examples/input.png).

Usage, from the repository root (CPU, a few seconds):

    pip install -r tests/fixtures/requirements.txt
    python3 tools/make_random_tiny_vae.py

The model is a tiny SD-like diffusers AutoencoderKL with RANDOM (untrained) weights: 3 channels,
latent 4, block_out_channels [16, 32, 32] (vae_scale_factor 4), layers_per_block 1, 8 groups,
mid attention, sample_size 64, float32, about 1 MB: the first embedded default, kept for quick
experiments; the shipped default is now the trained model in models/default/.
The picture is drawn procedurally (gradients and shapes), nothing is downloaded. Both outputs are
deterministic: running the script twice gives identical files.
"""

import os

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The trained demo model now lives in models/default (tools/train_demo_vae/); this random one
# goes to a scratch directory so it can never overwrite it.
MODEL_DIR = os.path.join(ROOT, "bench", "out", "random-tiny-vae")
IMAGE_PATH = os.path.join(ROOT, "examples", "input.png")
SEED = 2024
SIZE = 64

CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 3,
    up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[16, 32, 32],
    layers_per_block=1,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=8,
    sample_size=SIZE,
    scaling_factor=0.18215,
)


def random_weights(vae, gen):
    """Conv/linear weights N(0, 1/fan_in), biases N(0, 0.01), GroupNorm affine near identity."""
    with torch.no_grad():
        for module in vae.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                std = module.weight[0].numel() ** -0.5
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
            elif isinstance(module, torch.nn.GroupNorm):
                module.weight.copy_(1.0 + 0.2 * torch.randn(module.weight.shape, generator=gen))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))


def draw_picture(size):
    """A smooth RGB scene: sky-to-ground gradient, a sun, a hill, a house and a striped flag."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    img = np.zeros((size, size, 3), np.float32)
    img[..., 0] = 0.35 + 0.4 * yy
    img[..., 1] = 0.55 + 0.25 * yy
    img[..., 2] = 0.95 - 0.5 * yy

    sun = np.sqrt((xx - 0.78) ** 2 + (yy - 0.22) ** 2)
    glow = np.clip(1.0 - sun / 0.16, 0.0, 1.0) ** 1.5
    img = img * (1 - glow[..., None]) + np.array([1.0, 0.85, 0.3]) * glow[..., None]

    hill = yy > 0.72 - 0.12 * np.sin(np.pi * xx)
    shade = 0.45 + 0.3 * (1 - yy)
    img[hill] = np.stack([0.2 * shade, 0.75 * shade, 0.25 * shade], -1)[hill]

    wall = (xx > 0.18) & (xx < 0.45) & (yy > 0.5) & (yy < 0.75)
    img[wall] = [0.85, 0.8, 0.7]
    roof = (yy > 0.34) & (yy <= 0.5) & (np.abs(xx - 0.315) < (yy - 0.34) * 1.0)
    img[roof] = [0.7, 0.15, 0.12]
    door = (xx > 0.28) & (xx < 0.35) & (yy > 0.62) & (yy < 0.75)
    img[door] = [0.35, 0.2, 0.1]

    flag = (xx > 0.6) & (xx < 0.8) & (yy > 0.45) & (yy < 0.6)
    stripes = (np.floor((yy - 0.45) / 0.05) % 2 == 0)
    img[flag & stripes] = [0.1, 0.2, 0.8]
    img[flag & ~stripes] = [0.95, 0.95, 0.95]
    pole = (xx > 0.58) & (xx < 0.6) & (yy > 0.45) & (yy < 0.78)
    img[pole] = [0.3, 0.3, 0.3]
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def main():
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    vae = AutoencoderKL(**CONFIG).eval()
    random_weights(vae, gen)
    os.makedirs(MODEL_DIR, exist_ok=True)
    vae.save_pretrained(MODEL_DIR, safe_serialization=True)

    picture = draw_picture(SIZE)
    os.makedirs(os.path.dirname(IMAGE_PATH), exist_ok=True)
    Image.fromarray(picture, "RGB").save(IMAGE_PATH, optimize=True)

    reloaded = AutoencoderKL.from_pretrained(MODEL_DIR).eval()
    x = torch.from_numpy(picture).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    with torch.no_grad():
        latent = reloaded.encode(x).latent_dist.mean
        out = reloaded.decode(latent).sample
    for name, t in (("latent", latent), ("decoded", out)):
        if not torch.isfinite(t).all():
            raise SystemExit(f"default model gives non-finite {name}")
        print(f"{name} {list(t.shape)} max|.|={t.abs().max().item():.4g}")
    print(f"wrote {MODEL_DIR} and {IMAGE_PATH}")


if __name__ == "__main__":
    main()
