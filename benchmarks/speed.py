"""Speed of shapes-mini on this machine (medians over repeats): encode, decode images, decode sentences.

    python benchmarks/speed.py [--threads 2] [--repeats 15]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import blend
from blend import world


def median_time(fn, repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="shapes-mini")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    b = blend.load(args.preset, device="cpu")
    scenes = world.sample_scenes(32, 0)
    imgs = [world.render(s, 256) for s in scenes]
    caps = [world.caption(s) for s in scenes]
    e1 = b.encode_images(imgs[:1])
    e8 = b.encode_images(imgs[:8])

    unet_time = [0.0]
    unet = b.image_decoder.unet
    orig = unet.forward

    def timed(*a, **k):
        t = time.perf_counter()
        out = orig(*a, **k)
        unet_time[0] += time.perf_counter() - t
        return out

    rows = [
        ("encode image (per item, batch 32)", median_time(lambda: b.encode_images(imgs), args.repeats) / 32),
        ("encode image (single)", median_time(lambda: b.encode_images(imgs[:1]), args.repeats)),
        ("encode text (per item, batch 32)", median_time(lambda: b.encode_texts(caps), args.repeats) / 32),
        ("encode text (single)", median_time(lambda: b.encode_texts(caps[:1]), args.repeats)),
        ("decode one image", median_time(lambda: b.decode_images(e1, seed=0), args.repeats)),
        ("decode a batch of 8 images", median_time(lambda: b.decode_images(e8, seed=0), args.repeats)),
        ("decode one sentence", median_time(lambda: b.decode_texts(e1), args.repeats)),
        ("decode 8 sentences", median_time(lambda: b.decode_texts(e8), args.repeats)),
    ]
    unet.forward = timed
    total = median_time(lambda: b.decode_images(e1, seed=0), 1)
    unet_time[0] = 0.0
    t = time.perf_counter()
    b.decode_images(e1, seed=0)
    total = time.perf_counter() - t
    unet.forward = orig
    cfg = b.image_decoder.config
    print(f"shapes-mini speed, CPU, {args.threads} threads, medians of {args.repeats}; "
          f"{cfg['steps']} DPM-Solver++ steps, guidance {cfg['guidance_scale']} (2 UNet rows per image)\n")
    print(f"| {'what':38s} | {'time':>10s} |")
    print(f"|{'-' * 40}|{'-' * 12}|")
    for name, sec in rows:
        print(f"| {name:38s} | {sec * 1000:8.1f} ms |")
    print(f"| {'UNet share of one image decode':38s} | {100 * unet_time[0] / total:8.0f} % |")


if __name__ == "__main__":
    main()
