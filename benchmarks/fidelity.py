"""Fidelity of shapes-mini (v2): the share of samples whose decoded output has every attribute right, held-out vs train.

    python benchmarks/fidelity.py [--n 200] [--seed 2024] [--preset shapes-mini] [--steps N] [--strength S] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script from anywhere

import torch  # noqa: E402

import blend  # noqa: E402
from blend.evaluate import FIGURES, SPLITS, below_floor, fidelity, zero_shot  # noqa: E402
from blend.machine import matmul_peak_gflops  # noqa: E402


def table(res: dict) -> str:
    """The figures as a markdown table: figure | held-out | train | target (held-out) | floor."""
    w = max(len(FIGURES[key].label) for key in res["figures"])
    lines = [f"| {'figure':{w}s} | held-out |  train | target (held-out) | floor |",
             f"|{'-' * (w + 2)}|----------|--------|-------------------|-------|"]
    for key, shares in res["figures"].items():
        f = FIGURES[key]
        lines.append(f"| {f.label:{w}s} | {shares.get('held-out', float('nan')):8.3f} | "
                     f"{shares.get('train', float('nan')):6.3f} | {f.target:17.2f} | {f.floor:5.2f} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="shapes-mini", help="a preset name or a folder holding preset.json")
    p.add_argument("--n", type=int, default=200, help="cases per figure and split (>= 200 for the README)")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--steps", type=int, default=None, help="decoder steps (default: the preset's)")
    p.add_argument("--strength", type=float, default=None,
                   help="the decoder's strength: 0 draws the draft alone, > 0 lets the UNet redraw it (default: the preset's)")
    p.add_argument("--no-prior", action="store_true",
                   help="decode without the bundle's EmbeddingPrior (to see what the prior gives)")
    p.add_argument("--batch", type=int, default=64, help="rows per image decode")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--figures", nargs="*", choices=sorted(FIGURES), help="only these figures")
    p.add_argument("--json", help="also write every figure to this JSON file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_peak_gflops()
    b = blend.load(args.preset, device="cpu")
    if args.strength is not None:
        b.image_decoder.config["strength"] = args.strength
    if args.no_prior:
        b.image_decoder.config["prior"] = False
    t = time.perf_counter()
    res = fidelity(b, n=args.n, seed=args.seed, figures=args.figures, batch=args.batch, steps=args.steps)
    zs = zero_shot(b)
    wall = time.perf_counter() - t
    peak_after = matmul_peak_gflops()
    cfg = b.image_decoder.config
    print(f"\n{b.name} fidelity: {args.n} cases per figure and split (seed {args.seed}), decode seed = row index, "
          f"prior {'off' if cfg.get('prior') is False else 'on' if b.image_decoder.prior else 'none'}, "
          f"strength {cfg.get('strength', 0.0)} ({args.steps or cfg['steps']} DPM-Solver++ steps, guidance "
          f"{cfg['guidance_scale']}, where strength > 0)")
    print(f"machine: {platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__} with {args.threads} "
          f"threads; fp32 matmul peak (1024^2) {peak:.1f} GFLOP/s before the run, {peak_after:.1f} after; "
          f"wall time {wall:.0f} s\n")
    print(table(res))
    low = below_floor(res)
    pairs = sum(len(v) for v in res["figures"].values())
    print(f"\nbelow floor: {len(low)} of {pairs} (figure, split) pairs" + (": " + "; ".join(low) if 0 < len(low) <= 8 else ""))
    print("\nCLIP zero-shot accuracy per attribute (500 scenes per split; own caption vs every caption with that "
          "attribute changed; raw embeddings):")
    for split in SPLITS:
        print(f"  {split:8s}: " + ", ".join(f"{k} {v:.3f}" for k, v in zs[split].items()))
    print("background pixel std (after undoing the lighting): decoded " +
          ", ".join(f"{s} {res['background_std'][s]:.2f}" for s in SPLITS) +
          "; true renders " + ", ".join(f"{s} {res['background_std_renders'][s]:.2f}" for s in SPLITS))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"preset": b.name, "args": vars(args), "matmul_peak_gflops": {"before": peak, "after": peak_after},
                       "decoder": {"steps": args.steps or cfg["steps"], "guidance_scale": cfg["guidance_scale"],
                                   "strength": cfg.get("strength", 0.0)},
                       **res, "wall_s": wall, "zero_shot": zs, "below_floor": low,
                       "targets": {k: {"target": f.target, "floor": f.floor} for k, f in FIGURES.items()}},
                      fh, indent=2)


if __name__ == "__main__":
    main()
