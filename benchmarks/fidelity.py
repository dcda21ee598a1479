"""Fidelity of shapes-mini: the share of held-out samples whose decoded output has all four attributes right.

    python benchmarks/fidelity.py [--n 200] [--preset shapes-mini] [--steps N] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import blend
from blend.evaluate import fidelity, gap_stats, zero_shot

ROWS = [  # (key, label, floor asserted in tests, target)
    ("image_to_image", "image -> image", 0.90, 0.99),
    ("text_to_image", "text -> image (caption -> image)", 0.85, 0.97),
    ("text_to_text", "text -> text (caption back exactly)", 0.95, 1.00),
    ("image_to_text", "image -> text (caption of the image)", 0.85, 0.97),
    ("arithmetic", "arithmetic E(x) - T(cap x) + T(cap x') -> x'", 0.80, 0.95),
    ("arithmetic_color", "  ... x' differs in colour", None, None),
    ("arithmetic_shape", "  ... x' differs in shape", None, None),
    ("arithmetic_size", "  ... x' differs in size", None, None),
    ("arithmetic_text", "  ... decoded sentence names x'", None, None),
    ("word_arithmetic", "word arithmetic E(x) - T(c) + T(c') -> x in c'", None, 0.90),
]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="shapes-mini")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(2)
    b = blend.load(args.preset, device="cpu")
    if args.guidance is not None:
        b.image_decoder.config["guidance_scale"] = args.guidance
    t = time.time()
    res = fidelity(b, n=args.n, seed=args.seed, steps=args.steps)
    zs = zero_shot(b)
    gap = gap_stats(b)
    print(f"shapes-mini fidelity on {args.n} held-out scenes (seed {args.seed}), "
          f"steps={args.steps or b.image_decoder.config['steps']}, "
          f"guidance={b.image_decoder.config['guidance_scale']}, {time.time() - t:.0f} s\n")
    print(f"| {'figure':50s} | {'measured':>8s} | {'floor':>5s} | {'target':>6s} |")
    print(f"|{'-' * 52}|{'-' * 10}|{'-' * 7}|{'-' * 8}|")
    for key, label, floor, target in ROWS:
        f = f"{floor:.2f}" if floor else ""
        g = f"{target:.2f}" if target else ""
        print(f"| {label:50s} | {res[key]:8.3f} | {f:>5s} | {g:>6s} |")
    print(f"\nCLIP zero-shot accuracy (500 scenes vs 336 captions): " +
          ", ".join(f"{k} {v:.3f}" for k, v in zs.items()))
    print("modality gap, raw CLIP embeddings (300 scenes): " + ", ".join(f"{k} {v:.3f}" for k, v in gap.items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"fidelity": res, "zero_shot": zs, "gap": gap}, fh, indent=2)


if __name__ == "__main__":
    main()
