"""What the Python peers share: the two diffusers modules they run (encoder moments, decoder
sample), the inputs, the timing (median of N calls after one warm-up) and the check against
diffusers in PyTorch."""

import os
import sys
import statistics
import time

import numpy as np
import torch
from safetensors.torch import load_file

DEFAULT_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "out", "sd-vae-random"
)
SEED = 7


def add_common_args(parser, threads_help):
    """The arguments every Python peer takes: DIR, --runs, --threads, --size."""
    parser.add_argument("model_dir", nargs="?", default=DEFAULT_DIR)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per part (median)")
    parser.add_argument("--threads", type=int, default=2, help=threads_help)
    parser.add_argument("--size", type=int, default=256, help="image height = width")


def load_model(args):
    """diffusers' AutoencoderKL from args.model_dir in float32 and the inputs at args.size:
    (vae, latent channels, x, z). Exits with a message on bad arguments."""
    from diffusers import AutoencoderKL

    if args.runs < 1 or args.threads < 1:
        raise SystemExit("--runs and --threads must be positive")
    torch.set_num_threads(args.threads)
    vae = AutoencoderKL.from_pretrained(args.model_dir, torch_dtype=torch.float32).eval()
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    if args.size < scale or args.size % scale:
        raise SystemExit(f"--size must be a positive multiple of {scale}")
    latent = vae.config.latent_channels
    x, z, origin = inputs(args.model_dir, args.size, latent, scale)
    print(f"inputs: {origin}, x {list(x.shape)}, z {list(z.shape)}", file=sys.stderr)
    return vae, latent, x, z


class EncoderMoments(torch.nn.Module):
    """x -> quant_conv(encoder(x)): the parameters of diffusers' latent distribution."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x):
        moments = self.vae.encoder(x)
        if self.vae.quant_conv is not None:
            moments = self.vae.quant_conv(moments)
        return moments


class DecoderSample(torch.nn.Module):
    """z -> vae.decode(z).sample (post_quant_conv + decoder)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        return self.vae.decode(z).sample


def median_seconds(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def stored(model_dir, file, name):
    path = os.path.join(model_dir, file)
    if not os.path.isfile(path):
        return None
    return load_file(path).get(name)


def inputs(model_dir, size, latent_channels, scale):
    """The stored inputs when they have the requested size, else seeded random ones."""
    x_shape = (1, 3, size, size)
    z_shape = (1, latent_channels, size // scale, size // scale)
    x = stored(model_dir, "encode_in.safetensors", "x")
    z = stored(model_dir, "decode_in.safetensors", "z")
    if x is not None and z is not None and tuple(x.shape) == x_shape and tuple(z.shape) == z_shape:
        return x.to(torch.float32).contiguous(), z.to(torch.float32).contiguous(), "stored"
    gen = torch.Generator().manual_seed(SEED)
    x = torch.rand(x_shape, generator=gen) * 2.0 - 1.0
    z = torch.randn(z_shape, generator=gen)
    return x, z, f"random (seed {SEED})"


def compare(ours, ref):
    ref = ref.detach().numpy()
    diff = float(np.abs(ours - ref).max())
    tol = 1e-4 * max(1.0, float(np.abs(ref).max()))
    return {"max_abs_diff": diff, "tolerance": tol, "ok": diff <= tol}
