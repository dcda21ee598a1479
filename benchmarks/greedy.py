"""Greedy sentence decoding: HF's loop (`hf_greedy`) against the hand-written GPT-2 loop (`gpt2_greedy`), in one run.

    python benchmarks/greedy.py [--preset shapes-mini] [--threads 2] [--repeats 30]

Both loops are timed in turn within every repeat (as speed.py does v2 against v1), so the ratio holds on a busy
machine too; `decode_texts` is the whole public call, which uses the hand-written loop where `plain_gpt2` allows.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script from anywhere

import torch  # noqa: E402

import blend  # noqa: E402
from blend import world  # noqa: E402
from blend.decode_text import gpt2_greedy, hf_greedy, plain_gpt2  # noqa: E402
from blend.machine import matmul_peak_gflops  # noqa: E402
from speed import paired_median_times  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="shapes-mini", help="a preset name or a folder holding preset.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_peak_gflops()
    b = blend.load(args.preset, device="cpu")
    inv = b.text_decoder
    steps, eos = inv.config["max_tokens"], inv.tokenizer.eos_token_id
    emb = b.encode_images([world.render(s, 256) for s in world.sample_scenes(8, 0)])
    with torch.no_grad():
        one, eight = inv._start(emb[:1]), inv._start(emb)
    times = paired_median_times({
        "HF loop, one sentence": lambda: hf_greedy(inv.lm, one, steps, eos),
        "hand-written, one sentence": lambda: gpt2_greedy(inv.lm, one, steps, eos),
        "HF loop, 8 sentences": lambda: hf_greedy(inv.lm, eight, steps, eos),
        "hand-written, 8 sentences": lambda: gpt2_greedy(inv.lm, eight, steps, eos),
        "decode_texts, one sentence": lambda: b.decode_texts(emb[:1]),
    }, args.repeats)
    print(f"{b.name}: {torch.get_num_threads()} threads, medians of {args.repeats}, {one.shape[1]}-vector start, "
          f"{hf_greedy(inv.lm, one, steps, eos).shape[1]} tokens for the one sentence; plain_gpt2: "
          f"{plain_gpt2(inv.lm)}; fp32 matmul peak (1024^2) {peak:.1f} GFLOP/s before, "
          f"{matmul_peak_gflops():.1f} after\n")
    for name, sec in times.items():
        print(f"| {name:28s} | {sec * 1000:7.2f} ms |")
    for n in ("one sentence", "8 sentences"):
        print(f"\n{n}: HF / hand-written = {times[f'HF loop, {n}'] / times[f'hand-written, {n}']:.2f}", end="")
    print()


if __name__ == "__main__":
    main()
