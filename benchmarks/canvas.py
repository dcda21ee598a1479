"""How fast the canvas previews a strength drag, and how often picture and sentence disagree.

    python benchmarks/canvas.py                  # previews per second on a drag (target >= 10/s on 2 CPU cores)
    python benchmarks/canvas.py --agreement 200  # also: the disagreement rate of the agreement check

A drag reads from a sweep of strengths decoded in one batch when the direction is picked (so every pointer
move has a picture at once), and asks for the exact strength when the pointer rests. Figures: the sweep's
latency and throughput (previews per second), one exact refine, and the machine's fp32 matmul peak.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import blend  # noqa: E402
from blend import world  # noqa: E402
from blend.agreement import check_agreement  # noqa: E402
from blend.canvas import STRENGTHS, child_recipe, strength_sweep, word_direction  # noqa: E402
from blend.recipe import Recipe, Term  # noqa: E402
from blend.machine import matmul_peak_gflops  # noqa: E402
from blend.run import run_recipe  # noqa: E402


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_drag(b, repeats: int) -> None:
    scenes = world.sample_scenes(repeats, seed=7)
    words = list(world.COLORS + world.SHAPES + world.SIZES)  # one-word phrases of the world: any two make a direction
    rng = random.Random(7)
    sweep_s, refine_s = [], []
    for scene in scenes:
        tile = Recipe("mix", [Term("text", world.caption(scene))])
        pos, neg = rng.sample(words, 2)  # any two known words make a direction
        direction = word_direction(pos, neg)
        sweep_s.append(_time(lambda: strength_sweep(b, tile, direction, STRENGTHS)))
        refine_s.append(_time(lambda: run_recipe(b, child_recipe(tile, direction, 1.25))))
    sweep, refine = statistics.median(sweep_s), statistics.median(refine_s)
    n = len(STRENGTHS)
    print(f"sweep of {n} strengths, one batch (median of {repeats}): {sweep * 1000:7.1f} ms"
          f"  -> {n / sweep:5.1f} previews/s (target >= 10)")
    print(f"exact strength when the pointer rests (one image + sentence + agreement): {refine * 1000:7.1f} ms")
    print(f"a drag shows a picture at every pointer move after the first {sweep * 1000:.0f} ms; "
          f"after that, previews are limited by the browser, not the model")


def bench_agreement(b, n: int, seed: int) -> None:
    """Captions and caption arithmetic of random scenes, decoded; how often the check flags them, and whether
    the flagged ones are the wrong ones (by the world's attribute reader)."""
    rng = random.Random(seed)
    scenes = world.sample_scenes(n, seed)
    others = world.sample_scenes(n, seed + 1)
    caps, targets, points = [], [], []
    T = b.encode_texts([world.caption(s) for s in scenes])
    E = b.encode_images([world.render(s) for s in scenes])
    T2 = b.encode_texts([world.caption(s) for s in others])
    for i, (s, o) in enumerate(zip(scenes, others)):
        if rng.random() < 0.5:
            points.append(T[i]); targets.append(s); caps.append("caption")
        else:  # E(x) - T(caption x) + T(caption y) -> y
            points.append(blend.mix(torch.stack([E[i], T[i], T2[i]]), [1, -1, 1])); targets.append(o)
            caps.append("arithmetic")
    P = torch.stack(points)
    images, texts = [], []
    for i in range(0, n, 16):
        images += b.decode_images(P[i:i + 16], seed=0)
    texts = b.decode_texts(P)
    checks = check_agreement(b, P, images, texts)
    wrong = [not world.read_attributes(im).matches(t) for im, t in zip(images, targets)]
    flagged = [not c.ok for c in checks]
    for kind in ("caption", "arithmetic", "all"):
        idx = [i for i, c in enumerate(caps) if kind in (c, "all")]
        f = sum(flagged[i] for i in idx)
        w = sum(wrong[i] for i in idx)
        both = sum(flagged[i] and wrong[i] for i in idx)
        print(f"{kind:10s} n={len(idx):4d}  flagged {f / len(idx):6.1%}  picture wrong {w / len(idx):6.1%}  "
              f"wrong ones flagged {both / max(w, 1):6.1%}  flagged ones wrong {both / max(f, 1):6.1%}")
    print(f"median cosine(picture, point) {statistics.median(c.cosine for c in checks):.3f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="shapes-mini")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--agreement", type=int, default=0, help="also measure the check on this many results")
    p.add_argument("--seed", type=int, default=2024)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    b = blend.load(a.preset, device="cpu")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
          f"torch threads {torch.get_num_threads()}; fp32 matmul peak {matmul_peak_gflops():.1f} GFLOP/s "
          f"(1024^2)")
    warm = Recipe("mix", [Term("text", world.caption(world.sample_scenes(1, 0)[0]))], steps=2)
    run_recipe(b, warm)  # load both decoders before timing
    bench_drag(b, a.repeats)
    if a.agreement:
        bench_agreement(b, a.agreement, a.seed)


if __name__ == "__main__":
    main()
