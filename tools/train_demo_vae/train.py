#!/usr/bin/env python3
"""Trains the demo KL-VAE shipped in models/default/ on the photographs bundled in scikit-image.

Usage, from the repository root (CPU only; see README.md in this directory for the venv):

    python3 tools/train_demo_vae/train.py --out models/default

The model is a diffusers `AutoencoderKL` with the Stable Diffusion block structure in small
(see CONFIG). It is trained on random crops of public-domain / CC0 photographs from
`skimage.data` (see TRAIN_IMAGES); one whole photo (`coffee`) is kept out for evaluation.
Loss: L1 (or --loss mse) reconstruction + KL_WEIGHT * KL. Seeded (--seed), single process,
deterministic algorithms.

Every --eval-every steps the script saves a checkpoint (weights stored as float16) to --out and
evaluates THAT saved checkpoint, reloaded by diffusers, in float32: PSNR / SSIM of
encode -> mode (the mean) -> decode on 256x256 crops of the held-out photo and of each training
photo. A run cut off at any point therefore leaves a usable, evaluated model. It writes:

- config.json, diffusion_pytorch_model.safetensors (float16)
- eval.json: the evaluation of the saved weights (read by the Rust tests)
- train_log.json: loss curve and evaluations over time

PSNR is measured on 8-bit images exactly as `mlhost` writes them: the decoded sample v is mapped to
round((clamp(v, -1, 1) + 1) * 127.5) (round half away from zero), and
PSNR = 10 * log10(255^2 / mean((out - in)^2)) over all pixels and channels of the crop.
"""

import argparse
import json
import math
import os
import time
import zlib

import numpy as np
import skimage
import skimage.data
import torch
from diffusers import AutoencoderKL
from PIL import Image
from skimage.metrics import structural_similarity

SEED = 2026
KL_WEIGHT = 1e-6
EVAL_SIZE = 256

CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 3,
    up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[32, 64, 64],
    layers_per_block=1,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=8,
    sample_size=256,
    scaling_factor=0.18215,
)

# skimage.data function -> license as stated in its docstring (skimage 0.26.0).
TRAIN_IMAGES = {
    "astronaut": "public domain (NASA Great Images database)",
    "chelsea": "CC0 (photographer Stefan van der Walt)",
    "rocket": "public domain (SpaceX photos)",
    "hubble_deep_field": "public domain (NASA / HubbleSite)",
    "immunohistochemistry": "no known copyright restrictions (CMMI)",
    "retina": "CC0 1.0 (Mikael Haggstrom, Wikimedia Commons)",
    "camera": "CC0 (photographer Lav Varshney), grayscale",
    "coins": "no known copyright restrictions (Brooklyn Museum), grayscale",
    "brick": "CC0 (CC0Textures), grayscale",
    "grass": "CC0 (DeviantArt linolafett), grayscale",
    "gravel": "CC0 (CC0Textures), grayscale",
}
HELD_OUT = ("coffee", "CC0 (photographer Rachel Michetti, Pikolo Espresso Bar)")
# Top-left corners of the 256x256 evaluation crops of the held-out photo (400x600): the 2x3 grid
# that covers the whole photo, then the centre crop, which is also examples/photo.png.
HELD_OUT_CROPS = [(0, 0), (0, 172), (0, 344), (144, 0), (144, 172), (144, 344)]
EXAMPLE_CROP = (72, 172)


def load_rgb(name):
    """An skimage.data image as uint8 HxWx3 (grayscale replicated)."""
    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def center_crop(img, size):
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return img[top:top + size, left:left + size]


def to_tensor(imgs):
    """uint8 NxHxWx3 -> float32 [N, 3, H, W] in [-1, 1] (x / 127.5 - 1, as mlhost)."""
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(sample):
    """Decoded [N, 3, H, W] -> uint8 NxHxWx3, round half away from zero as mlhost's PNG writer."""
    v = (sample.clamp(-1.0, 1.0) + 1.0) * 127.5
    return torch.floor(v + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def ssim(a, b):
    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def round_trip(vae, crops):
    """encode -> mode -> decode, one crop at a time, as uint8 images."""
    outs = []
    with torch.no_grad():
        for crop in crops:
            x = to_tensor([crop])
            z = vae.encode(x).latent_dist.mode()
            outs.append(to_uint8(vae.decode(z).sample)[0])
    return outs


def evaluate(model_dir, held_out, train_imgs, full):
    """PSNR/SSIM of the checkpoint saved in model_dir, reloaded in float32 as diffusers loads it.

    The training photos are evaluated only when `full` (the final checkpoint): it is slow on CPU.
    """
    vae = AutoencoderKL.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    crops = [held_out[t:t + EVAL_SIZE, l:l + EVAL_SIZE] for t, l in HELD_OUT_CROPS]
    outs = round_trip(vae, crops)
    per_crop = [
        {"top": t, "left": l, "psnr_db": round(psnr(c, o), 4), "ssim": round(ssim(c, o), 4)}
        for (t, l), c, o in zip(HELD_OUT_CROPS, crops, outs)
    ]
    t, l = EXAMPLE_CROP
    ex = held_out[t:t + EVAL_SIZE, l:l + EVAL_SIZE]
    ex_out = round_trip(vae, [ex])[0]
    train = {}
    for name, img in train_imgs.items() if full else ():
        c = center_crop(img, EVAL_SIZE)
        o = round_trip(vae, [c])[0]
        train[name] = {"psnr_db": round(psnr(c, o), 4), "ssim": round(ssim(c, o), 4)}
    return {
        "held_out": {
            "image": HELD_OUT[0],
            "crop_size": EVAL_SIZE,
            "crops": per_crop,
            "mean_psnr_db": round(float(np.mean([c["psnr_db"] for c in per_crop])), 4),
            "min_psnr_db": round(float(np.min([c["psnr_db"] for c in per_crop])), 4),
            "mean_ssim": round(float(np.mean([c["ssim"] for c in per_crop])), 4),
        },
        "example": {
            "file": "examples/photo.png",
            "source": f"{HELD_OUT[0]}, rows {t}..{t + EVAL_SIZE}, cols {l}..{l + EVAL_SIZE}",
            "psnr_db": round(psnr(ex, ex_out), 4),
            "ssim": round(ssim(ex, ex_out), 4),
        },
        "train_center_crops": train,
        "mean_train_psnr_db": (round(float(np.mean([v["psnr_db"] for v in train.values()])), 4)
                               if train else None),
    }, ex


def save_f16(vae, out_dir):
    """Saves a float16 copy of the weights (the float32 training model is left untouched)."""
    half = AutoencoderKL.from_config(vae.config)
    half.load_state_dict(vae.state_dict())
    half.to(torch.float16).save_pretrained(out_dir, safe_serialization=True)


def random_batch(rng, images, weights, batch, crop):
    """Random crops with random horizontal flip and, half the time, a 2x box downscale."""
    out = []
    for _ in range(batch):
        img = images[rng.choice(len(images), p=weights)]
        scale = 2 if (rng.random() < 0.5 and min(img.shape[:2]) >= 2 * crop) else 1
        size = crop * scale
        h, w = img.shape[:2]
        top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        patch = img[top:top + size, left:left + size].astype(np.float32)
        if scale == 2:
            patch = patch.reshape(crop, 2, crop, 2, 3).mean(axis=(1, 3))
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        out.append(patch)
    x = torch.from_numpy(np.stack(out).copy()).permute(0, 3, 1, 2) / 127.5 - 1.0
    return x.contiguous()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="models/default", help="output model directory")
    p.add_argument("--steps", type=int, default=2400)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--eval-every", type=int, default=400)
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop (after saving and evaluating) once this much wall time has passed")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 is fastest on a busy 2-core machine (no spinning)")
    p.add_argument("--bench", type=int, default=0, help="only time this many steps and exit")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the init and of the crops")
    p.add_argument("--loss", choices=["l1", "mse"], default="l1",
                   help="reconstruction loss (mse optimizes PSNR directly)")
    p.add_argument("--init", metavar="DIR",
                   help="start from the weights in DIR (a checkpoint of an earlier run) "
                        "instead of a random init; the optimizer and schedule start afresh")
    p.add_argument("--eval-only", action="store_true",
                   help="no training: evaluate the model in --out and rewrite its eval.json")
    p.add_argument("--write-examples", metavar="DIR",
                   help="also write the example photos (photo.png, cat.png) into DIR")
    args = p.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(args.seed)

    train_imgs = {name: load_rgb(name) for name in TRAIN_IMAGES}
    held_out = load_rgb(HELD_OUT[0])
    images = list(train_imgs.values())
    if args.write_examples:
        write_examples(args.write_examples, held_out, train_imgs)
    if args.eval_only:
        log = {"evals": []}
        log_path = os.path.join(args.out, "train_log.json")
        if os.path.exists(log_path):
            with open(log_path) as f:
                log = json.load(f)
        step = log["evals"][-1]["step"] if log["evals"] else None
        torch.set_num_threads(args.threads)
        ev = evaluate_and_record(args.out, held_out, train_imgs, True, step)
        print(json.dumps(ev, indent=1))
        return
    # Colour photos are sampled 3x as often as the grayscale textures.
    w = np.array([1.0 if "grayscale" in TRAIN_IMAGES[n] else 3.0 for n in train_imgs])
    weights = w / w.sum()

    vae = AutoencoderKL(**CONFIG).train()
    if args.init:
        start_from = AutoencoderKL.from_pretrained(args.init, torch_dtype=torch.float32)
        vae.load_state_dict(start_from.state_dict())
        print(f"initialized from {args.init}", flush=True)
    n_params = sum(p.numel() for p in vae.parameters())
    print(f"skimage {skimage.__version__}, torch {torch.__version__}, params {n_params}", flush=True)
    opt = torch.optim.Adam(vae.parameters(), lr=args.lr)
    warmup = 100

    def lr_at(step):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * t)))

    log = {"config": CONFIG, "args": vars(args), "seed": args.seed, "kl_weight": KL_WEIGHT,
           "params": n_params, "loss": [], "evals": []}
    start = time.time()
    run_l1 = run_kl = 0.0
    n_run = 0
    step = 0
    for step in range(1, args.steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(step - 1)
        x = random_batch(rng, images, weights, args.batch, args.crop)
        post = vae.encode(x).latent_dist
        z = post.sample(generator=None)
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        rec_loss = l1 if args.loss == "l1" else (rec - x).pow(2).mean()
        kl = post.kl().mean() / x[0].numel()
        loss = rec_loss + KL_WEIGHT * kl  # as SD: sum(rec) + 1e-6 * sum(KL), both over numel
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run_l1 += l1.item()
        run_kl += kl.item()
        n_run += 1
        if args.bench and step == args.bench:
            dt = (time.time() - start) / step
            print(f"{dt:.3f} s/step, {step} steps", flush=True)
            return
        if step % 50 == 0:
            el = time.time() - start
            entry = {"step": step, "minutes": round(el / 60, 2), "l1": round(run_l1 / n_run, 5),
                     "kl_per_dim": round(run_kl / n_run, 4), "lr": lr_at(step - 1)}
            log["loss"].append(entry)
            print(json.dumps(entry), flush=True)
            run_l1 = run_kl = 0.0
            n_run = 0
        over = args.max_minutes and time.time() - start > args.max_minutes * 60
        if step % args.eval_every == 0 or step == args.steps or over:
            last = step == args.steps or over
            checkpoint(vae, args.out, held_out, train_imgs, log, step, start, full=last)
            vae.train()
            if over:
                print(f"stopped at step {step}: --max-minutes reached", flush=True)
                break
    log["wall_minutes"] = round((time.time() - start) / 60, 2)
    write_json(os.path.join(args.out, "train_log.json"), log)
    print(f"done: {step} steps in {log['wall_minutes']} min", flush=True)


def checkpoint(vae, out_dir, held_out, train_imgs, log, step, start, full):
    """Saves the float16 weights to out_dir, evaluates them, writes eval.json and train_log.json."""
    os.makedirs(out_dir, exist_ok=True)
    vae.eval()
    save_f16(vae, out_dir)
    ev = evaluate_and_record(out_dir, held_out, train_imgs, full, step)
    summary = {"step": step, "minutes": round((time.time() - start) / 60, 2),
               "held_out_mean_psnr_db": ev["held_out"]["mean_psnr_db"],
               "example_psnr_db": ev["example"]["psnr_db"],
               "mean_train_psnr_db": ev["mean_train_psnr_db"]}
    log["evals"].append(summary)
    log["wall_minutes"] = summary["minutes"]
    write_json(os.path.join(out_dir, "train_log.json"), log)
    print("EVAL " + json.dumps(summary), flush=True)


def evaluate_and_record(out_dir, held_out, train_imgs, full, step):
    """Evaluates the model saved in out_dir and writes eval.json, with the size and CRC-32 of
    the files it describes (the Rust tests refuse figures that belong to other weights)."""
    ev, _ = evaluate(out_dir, held_out, train_imgs, full)
    ev["step"] = step
    ev["weights_dtype"] = "float16"
    ev["psnr_definition"] = ("8-bit output round((clamp(v,-1,1)+1)*127.5) vs 8-bit input, "
                             "10*log10(255^2/MSE) over all pixels and channels")
    ev["versions"] = {"torch": torch.__version__, "diffusers": diffusers_version(),
                      "scikit-image": skimage.__version__, "numpy": np.__version__}
    ev["files"] = {}
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        with open(os.path.join(out_dir, name), "rb") as f:
            data = f.read()
        ev["files"][name] = {"bytes": len(data), "crc32": f"{zlib.crc32(data):08x}"}
    write_json(os.path.join(out_dir, "eval.json"), ev)
    return ev


def diffusers_version():
    import diffusers

    return diffusers.__version__


def write_examples(out_dir, held_out, train_imgs):
    """examples/photo.png: the held-out 256x256 crop the Rust tests round-trip;
    examples/cat.png: the 256x256 centre crop of the training photo `chelsea`."""
    os.makedirs(out_dir, exist_ok=True)
    t, l = EXAMPLE_CROP
    photo = held_out[t:t + EVAL_SIZE, l:l + EVAL_SIZE]
    Image.fromarray(np.ascontiguousarray(photo), "RGB").save(
        os.path.join(out_dir, "photo.png"), optimize=True)
    cat = center_crop(train_imgs["chelsea"], EVAL_SIZE)
    Image.fromarray(np.ascontiguousarray(cat), "RGB").save(
        os.path.join(out_dir, "cat.png"), optimize=True)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
