"""Speed of each real preset's full-size pipeline, and what blend's wrapper costs on top of plain diffusers.

Random weights (speed does not depend on them; see benchmarks/random_models.py), native resolution, the preset's
steps; for each dtype (fp16, bf16) and variant (SDPA attention; + channels-last; + torch.compile of the UNet):
seconds per image through blend's decoder, the same call through the diffusers pipeline directly, their ratio
(target <= 1.02), and peak memory. kandinsky-2.2 counts its prior too (a text term, as in the app).
Targets on an H100: unclip-h 768 px at 20 steps <= 1.0 s; kandinsky-2.2 512 px at 100 steps, prior included,
<= 1.5 s.

    python benchmarks/gpu.py                                  # CUDA, every preset, fp16 + bf16, every variant
    python benchmarks/gpu.py --preset unclip-h --dtypes fp16 --variants sdpa
    python benchmarks/gpu.py --tiny --device cpu              # the tiny components, seconds: a smoke run (tests)
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import random_models as rm  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
VARIANTS = ("sdpa", "sdpa+channels-last", "sdpa+channels-last+compile")
NATIVE = {"unclip-l": (768, 20), "unclip-h": (768, 20), "kandinsky-2.2": (512, 100)}  # side, steps
TINY = (32, 2)


def matmul_gflops(device: torch.device, n: int = 1024, repeats: int = 5) -> float:
    """The machine's fp32 matmul peak, measured: GFLOP/s of an n x n product."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats + 1):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def seconds(fn, device, repeats: int) -> float:
    fn()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def build(preset: str, dtype, device, tiny: bool, tmp: Path):
    """(pipeline, blend decoder, prior or None) for one preset, on `device` in `dtype`."""
    from blend.decoders.kandinsky import Kandinsky22
    from blend.decoders.stable_unclip import StableUnCLIP

    if tiny:
        import tiny as t

        pipe = t.kandinsky_pipeline() if preset == "kandinsky-2.2" else t.unclip_pipeline(tmp)
        prior = t.kandinsky_prior_pipeline(tmp) if preset == "kandinsky-2.2" else None
        if dtype != torch.float32:
            pipe, prior = pipe.to(dtype=dtype), prior.to(dtype=dtype) if prior is not None else None
    else:
        pipe, prior = rm.image_pipeline(preset, dtype, tmp), rm.prior(preset, dtype, tmp)
        prior = prior if preset == "kandinsky-2.2" else None  # unclip-l's Karlo prior is timed in neither path
    if prior is not None:
        prior.to(device)
        prior.set_progress_bar_config(disable=True)
    spec = {"embed_norm": 20.0, "options": {"negative_image_embeds": "zeros"} if preset == "kandinsky-2.2" else {}}
    cls = Kandinsky22 if preset == "kandinsky-2.2" else StableUnCLIP
    dec = (cls.from_pipeline(pipe, spec, tmp, device, dtype) if cls is Kandinsky22
           else cls.from_pipeline(pipe, spec, tmp, device))
    return pipe, dec, prior


def apply_variant(pipe, variant: str):
    if "channels-last" in variant:
        pipe.unet.to(memory_format=torch.channels_last)
    if "compile" in variant:
        pipe.unet = torch.compile(pipe.unet, mode="max-autotune", fullgraph=False)


def run_one(preset: str, dtype_name: str, variant: str, device, tiny: bool, repeats: int) -> dict:
    dtype = DTYPES[dtype_name]
    side, steps = TINY if tiny else NATIVE[preset]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        pipe, dec, prior = build(preset, dtype, device, tiny, Path(tmp))
        apply_variant(pipe, variant)
        dim = dec.embed_dim
        emb = torch.nn.functional.normalize(torch.randn(1, dim, generator=torch.Generator().manual_seed(0)), dim=-1)
        text = "a photo of a red apple on a table"

        def prior_embeds():
            g = torch.Generator("cpu").manual_seed(0)
            return prior(text, negative_prompt="", generator=g, num_inference_steps=25 if not tiny else 2,
                         output_type="pt").image_embeds

        def through_blend():
            e = emb
            if prior is not None:  # a text term, as the prior gap map carries it
                e = torch.nn.functional.normalize(prior_embeds().float().cpu(), dim=-1)
            return dec(e, seed=0, steps=steps, height=side, width=side, output_type="pt")

        def plain():
            g = torch.Generator("cpu").manual_seed(0)
            if prior is not None:
                e = prior_embeds()
                return pipe(image_embeds=e, negative_image_embeds=torch.zeros_like(e), num_inference_steps=steps,
                            guidance_scale=4.0, height=side, width=side, generator=g, output_type="pt").images
            return pipe(image_embeds=(emb * 20.0).to(device, dtype), prompt="", num_inference_steps=steps,
                        guidance_scale=10.0, noise_level=0, height=side, width=side, generator=g,
                        output_type="pt").images

        pipe.set_progress_bar_config(disable=True)
        with torch.inference_mode():
            t_blend = seconds(through_blend, device, repeats)
            t_plain = seconds(plain, device, repeats)
    return {"preset": preset, "dtype": dtype_name, "variant": variant, "side": side, "steps": steps,
            "prior": prior is not None, "blend_s": t_blend, "diffusers_s": t_plain, "ratio": t_blend / t_plain,
            "peak_gb": peak_memory_gb(device)}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", action="append", choices=rm.PRESETS, help="default: every real preset")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtypes", default="fp16,bf16")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="tiny components at 32 px, 2 steps: checks the script runs")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type != "cuda" and not args.tiny:
        print("no CUDA device: full-size figures need a GPU (use --tiny for a smoke run)", file=sys.stderr)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"machine: {name}, torch {torch.__version__}, matmul peak {matmul_gflops(device):.0f} GFLOP/s "
          f"(1024^2 fp32)")
    rows = []
    print(f"{'preset':14} {'dtype':5} {'variant':28} {'px':>4} {'steps':>5} {'blend s':>8} {'diffusers s':>11} "
          f"{'ratio':>6} {'peak GB':>7}")
    for preset in args.preset or rm.PRESETS:
        for dtype in args.dtypes.split(","):
            for variant in args.variants.split(","):
                r = run_one(preset, dtype, variant, device, args.tiny, args.repeats)
                rows.append(r)
                print(f"{preset:14} {dtype:5} {variant:28} {r['side']:>4} {r['steps']:>5} {r['blend_s']:>8.3f} "
                      f"{r['diffusers_s']:>11.3f} {r['ratio']:>6.3f} {r['peak_gb']:>7.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": name, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
