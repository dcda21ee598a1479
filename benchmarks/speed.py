"""Speed of shapes-mini (v2) on this machine, medians over repeats, beside the machine's matmul peak; v1's decoder for comparison.

    python benchmarks/speed.py [--preset shapes-mini] [--threads 2] [--repeats 15] [--json out.json]

v1's 32-px pixel-space decoder is timed in the same run: its weights are retired, so its UNet is built with
random weights from v1's own config (benchmarks/v1_decoder/, copied from git aae1ed7), sampled with v1's
steps and guidance (12 DPM-Solver++ steps, guidance 3). Speed does not depend on the weights.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script from anywhere

import torch  # noqa: E402

import blend  # noqa: E402
from blend import world  # noqa: E402
from blend.decoders.mini import DraftLatents, sample_unclip  # noqa: E402
from blend.machine import matmul_peak_gflops  # noqa: E402

V1 = Path(__file__).resolve().parent / "v1_decoder"
TARGET_ONE_IMAGE_S = 0.15  # one 64-px image on 2 cores, and no slower than v1


def paired_median_times(fns: dict, repeats: int) -> dict:
    """Median seconds of each fn, timed in turn within every repeat, so a load that comes and goes hits all alike."""
    for fn in fns.values():
        fn()  # warm up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def median_time(fn, repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class UNetClock:
    """Times and counts every forward of a UNet (wall seconds, summed) while installed."""

    def __init__(self, unet):
        self.unet, self.seconds, self.calls = unet, 0.0, 0

    def __enter__(self):
        orig = self.unet.forward

        def timed(*a, **k):
            t = time.perf_counter()
            out = orig(*a, **k)
            self.seconds += time.perf_counter() - t
            self.calls += 1
            return out

        self.unet.forward = timed
        return self

    def __exit__(self, *exc):
        del self.unet.forward  # back to the class's forward


def unet_share(unet, decode, repeats: int) -> tuple[float, float, int]:
    """(median UNet seconds, median share of the whole decode, UNet calls) over repeats of one decode."""
    decode()
    unet_s, shares, calls = [], [], 0
    for _ in range(repeats):
        with UNetClock(unet) as clock:
            t = time.perf_counter()
            decode()
            total = time.perf_counter() - t
        unet_s.append(clock.seconds)
        shares.append(clock.seconds / total)
        calls = clock.calls
    return statistics.median(unet_s), statistics.median(shares), calls


@torch.no_grad()
def unet_gflop_per_image(unet, config: dict, calls: int, guidance: float, hint=None) -> float:
    """FLOPs of the UNet over one image's decode (its calls x one forward of its 1 or 2 CFG rows), in GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    if calls == 0:  # a decode that never runs the UNet (the draft alone)
        return 0.0
    rows = 2 if guidance != 1.0 else 1
    if "latent_channels" in config:
        c, s = config["latent_channels"], config["latent_size"]
    else:
        r = config["unshuffle"]
        c, s = 3 * r * r, config["image_size"] // r
    x = torch.randn(rows, c, s, s)
    emb = torch.nn.functional.normalize(torch.randn(rows, config["embed_dim"]), dim=-1)
    if hint is not None:
        x = torch.cat([x, hint(emb)], dim=1)
    with FlopCounterMode(display=False) as counter:
        unet(x, torch.tensor(500), class_labels=emb, encoder_hidden_states=emb[:, None, :])
    return counter.get_total_flops() * calls / 1e9


def v1_decoder():
    """v1's UNet (random weights, its config), scheduler and sampling defaults -> (unet, decode(emb, seed), config)."""
    from diffusers import DPMSolverMultistepScheduler, UNet2DConditionModel

    config = json.loads((V1 / "decoder.json").read_text())
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(json.loads((V1 / "unet_config.json").read_text())).eval()
    scheduler_config = json.loads((V1 / "scheduler_config.json").read_text())

    def decode(emb, seed=0):
        x = sample_unclip(unet, emb, steps=config["steps"], guidance_scale=config["guidance_scale"], seed=seed,
                          config=config, scheduler=DPMSolverMultistepScheduler.from_config(scheduler_config))
        return world.to_images(x, config["image_size"])

    return unet, decode, config


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="shapes-mini", help="a preset name or a folder holding preset.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--json", help="also write the timings to this JSON file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_peak_gflops()
    b = blend.load(args.preset, device="cpu")
    dec = b.image_decoder
    cfg, steps, guidance = dec.config, int(dec.config["steps"]), float(dec.config["guidance_scale"])
    scenes = world.sample_scenes(32, 0)
    imgs = [world.render(s, 256) for s in scenes]
    caps = [world.caption(s) for s in scenes]
    e1, e8 = b.encode_images(imgs[:1]), b.encode_images(imgs[:8])
    r = args.repeats

    def one():
        return b.decode_images(e1, seed=0, size=world.SIZE)

    v1_unet, v1_decode, v1_cfg = v1_decoder()
    v1_e1 = torch.nn.functional.normalize(torch.randn(1, v1_cfg["embed_dim"], generator=torch.Generator().manual_seed(0)), dim=-1)
    v1_e8 = torch.nn.functional.normalize(torch.randn(8, v1_cfg["embed_dim"], generator=torch.Generator().manual_seed(1)), dim=-1)
    decodes = paired_median_times({  # v2 and v1 in turn, so the comparison holds on a busy machine too
        "decode one 64-px image": one,
        "v1: decode one 32-px image (random weights)": lambda: v1_decode(v1_e1),
        "decode a batch of 8 images": lambda: b.decode_images(e8, seed=list(range(8)), size=world.SIZE),
        "v1: decode a batch of 8 images": lambda: v1_decode(v1_e8, seed=list(range(8))),
    }, r)
    rows = {
        "encode image (per item, batch 32)": median_time(lambda: b.encode_images(imgs), r) / 32,
        "encode image (single)": median_time(lambda: b.encode_images(imgs[:1]), r),
        "encode text (per item, batch 32)": median_time(lambda: b.encode_texts(caps), r) / 32,
        "encode text (single)": median_time(lambda: b.encode_texts(caps[:1]), r),
        "decode one 64-px image": decodes["decode one 64-px image"],
        "decode a batch of 8 images": decodes["decode a batch of 8 images"],
        "decode one sentence": median_time(lambda: b.decode_texts(e1), r),
        "decode 8 sentences": median_time(lambda: b.decode_texts(e8), r),
    }
    v1_rows = {k: v for k, v in decodes.items() if k.startswith("v1:")}
    unet_s, share, calls = unet_share(dec.unet, one, max(3, r // 3))
    hint = DraftLatents(dec.draft, dec.vae) if getattr(dec, "draft", None) is not None else None  # beside the latents
    gflop = unet_gflop_per_image(dec.unet, cfg, calls, guidance, hint)
    v1_unet_s, v1_share, v1_calls = unet_share(v1_unet, lambda: v1_decode(v1_e1), max(3, r // 3))
    v1_gflop = unet_gflop_per_image(v1_unet, v1_cfg, v1_calls, v1_cfg["guidance_scale"])
    peak_after = matmul_peak_gflops()

    print(f"{b.name} speed: CPU ({platform.machine()}, {os.cpu_count()} cores), torch {torch.__version__} with "
          f"{args.threads} threads, medians of {r}; fp32 matmul peak (1024^2) {peak:.1f} GFLOP/s before, "
          f"{peak_after:.1f} after")
    strength = float(cfg.get("strength", 1.0))
    if strength <= 0:  # the draft alone: no UNet, no VAE
        v2 = "the LayeredDraft alone (strength 0: no UNet calls)"
    else:
        v2 = (f"{steps} DPM-Solver++ steps" + (f" at strength {strength} (from the draft's latents)" if strength < 1
                                              else "") +
              f", {calls} UNet calls, guidance {guidance} ({2 if guidance != 1 else 1} UNet rows per image), "
              f"8x8x{cfg.get('latent_channels')} latents + VAE decoder")
    print(f"v2: {v2}; v1: {v1_cfg['steps']} steps, guidance {v1_cfg['guidance_scale']}, {v1_calls} UNet calls, "
          f"32-px pixel space (unshuffled to 8x8x{3 * v1_cfg['unshuffle'] ** 2})\n")
    print(f"| {'what':44s} | {'v2':>10s} | {'v1':>10s} |")
    print(f"|{'-' * 46}|{'-' * 12}|{'-' * 12}|")
    for name, sec in rows.items():
        v1 = {"decode one 64-px image": "v1: decode one 32-px image (random weights)",
              "decode a batch of 8 images": "v1: decode a batch of 8 images"}.get(name)
        other = f"{v1_rows[v1] * 1000:7.1f} ms" if v1 else ""
        print(f"| {name:44s} | {sec * 1000:7.1f} ms | {other:>10s} |")
    print(f"| {'UNet share of one image decode':44s} | {100 * share:8.0f} % | {100 * v1_share:8.0f} % |")
    print(f"| {'UNet GFLOP per image':44s} | {gflop:10.2f} | {v1_gflop:10.2f} |")
    v2_rate = f"{gflop / unet_s:5.1f}, {100 * gflop / unet_s / peak:2.0f}%" if calls else "no UNet"
    print(f"| {'UNet GFLOP/s, share of the matmul peak':44s} | {v2_rate:>10s} "
          f"| {v1_gflop / v1_unet_s:5.1f}, {100 * v1_gflop / v1_unet_s / peak:2.0f}% |")
    one_s, v1_s = rows["decode one 64-px image"], v1_rows["v1: decode one 32-px image (random weights)"]
    print(f"\none 64-px image: {one_s:.3f} s (target <= {TARGET_ONE_IMAGE_S} s on 2 cores: "
          f"{'met' if one_s <= TARGET_ONE_IMAGE_S else 'NOT met'}); v1 in this run {v1_s:.3f} s "
          f"(v2 / v1 = {one_s / v1_s:.2f}: {'no slower' if one_s <= v1_s else 'SLOWER'})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"preset": b.name, "threads": args.threads, "repeats": r,
                       "matmul_peak_gflops": {"before": peak, "after": peak_after},
                       "seconds": {**rows, **v1_rows}, "unet_share": {"v2": share, "v1": v1_share},
                       "unet_gflop_per_image": {"v2": gflop, "v1": v1_gflop},
                       "unet_calls_per_image": {"v2": calls, "v1": v1_calls}, "strength": strength,
                       "unet_seconds_per_image": {"v2": unet_s, "v1": v1_unet_s}}, fh, indent=2)


if __name__ == "__main__":
    main()
