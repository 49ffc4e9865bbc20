#!/usr/bin/env python3
"""Writes an SD-v1-size AutoencoderKL with random weights, plus benchmark inputs.

Usage, from the repository root (CPU, about a minute, ~330 MB written):

    python3 bench/make_sd_vae.py                      # -> bench/out/sd-vae-random
    python3 bench/make_sd_vae.py /some/other/dir

The directory gets:
  config.json, diffusion_pytorch_model.safetensors  diffusers AutoencoderKL with the SD v1 VAE config
      (block_out_channels [128, 256, 512, 512], layers_per_block 2, norm_num_groups 32, latent 4,
      sample_size 256), float32, random weights (seeded; NOT a trained model)
  encode_in.safetensors  tensor `x` [1, 3, 256, 256] float32, uniform in [-1, 1]
  decode_in.safetensors  tensor `z` [1, 4, 32, 32] float32, standard normal

bench/out/ is gitignored: never commit the output. Versions: tests/fixtures/requirements.txt.
Peer timing of diffusers on this directory: bench/peers/pytorch_vae.py.
"""

import argparse
import os

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "sd-vae-random")
SEED = 7

SD_V1_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256,
    scaling_factor=0.18215,
)


def random_weights(vae, gen):
    """Conv/linear weights N(0, 1/fan_in), small random biases and GroupNorm affines.

    Keeps activations O(1) through the whole network, so timings are not skewed by
    denormals or infinities the way an unscaled init could.
    """
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", nargs="?", default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args()

    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    vae = AutoencoderKL(**SD_V1_VAE).eval()
    random_weights(vae, gen)
    os.makedirs(args.out_dir, exist_ok=True)
    vae.save_pretrained(args.out_dir, safe_serialization=True)

    size = SD_V1_VAE["sample_size"]
    vsf = 2 ** (len(SD_V1_VAE["block_out_channels"]) - 1)
    x = torch.rand((1, 3, size, size), generator=gen) * 2.0 - 1.0
    z = torch.randn((1, SD_V1_VAE["latent_channels"], size // vsf, size // vsf), generator=gen)
    save_file({"x": x.contiguous()}, os.path.join(args.out_dir, "encode_in.safetensors"))
    save_file({"z": z.contiguous()}, os.path.join(args.out_dir, "decode_in.safetensors"))

    params = sum(p.numel() for p in vae.parameters())
    print(f"wrote {args.out_dir}: {params} parameters, x {list(x.shape)}, z {list(z.shape)}")


if __name__ == "__main__":
    main()
