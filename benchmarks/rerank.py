"""Does reranking inverter candidates by re-embedding them help? Exact-match on held-out shapes-world samples.

    python benchmarks/rerank.py --n 300

For each held-out scene four embeddings are decoded by the shapes-mini prefix inverter:
  image   the image embedding of its render
  text    the text embedding of its caption
  noisy   the image embedding plus Gaussian noise of norm 0.6, back on the sphere (seeded)
  swap    blend arithmetic: image(scene) - text(its colour) + text(another colour); the answer is the scene
          with that colour (the blends users make, where the inverter has the least certainty)
Each is decoded greedily, as the best of the beam, and as the beam candidate a `Reranker` picks (cosine of its
CLIP text embedding to the query, plus `fluency` x its mean token log-prob). A sentence is an exact match when
it equals the expected canonical caption. Nearest-caption retrieval over all 336 canonical captions is printed
as a reference point (it can only ever answer a canonical caption).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blend import world  # noqa: E402
from blend.decode_text import CaptionBank, PrefixInverter, Reranker, Retrieval  # noqa: E402
from blend.encode import Encoder  # noqa: E402
from blend.presets import get_preset, resolve_source  # noqa: E402


def exact(texts: list[str], scenes: list[world.Scene]) -> float:
    return sum(t.strip().lower() == world.caption(s) for t, s in zip(texts, scenes)) / len(scenes)


def run(preset: str = "shapes-mini", n: int = 300, seed: int = 20240, candidates: int = 8,
        fluency: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0), batch: int = 100) -> dict:
    spec = get_preset(preset)
    dev = torch.device("cpu")
    enc = Encoder.from_spec(spec["encoder"], spec["_dir"], dev, torch.float32)
    inv = PrefixInverter.from_pretrained(resolve_source(spec["text_decoder"]["source"], spec["_dir"]))
    scenes = world.sample_scenes(n, seed)
    image = enc.encode_images([world.render(s) for s in scenes])
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(image.shape, generator=g)
    rng = __import__("random").Random(seed)
    swapped = [s.with_(color=rng.choice([c for c in world.COLORS if c not in (s.color, s.background)]))
               for s in scenes]
    swap = (image - enc.encode_texts([s.color for s in scenes]) + enc.encode_texts([s.color for s in swapped]))
    targets = {"image": (image, scenes),
               "text": (enc.encode_texts([world.caption(s) for s in scenes]), scenes),
               "noisy": (torch.nn.functional.normalize(image + 0.6 * noise / noise.norm(dim=-1, keepdim=True), dim=-1),
                         scenes),
               "swap": (torch.nn.functional.normalize(swap, dim=-1), swapped)}
    bank = Retrieval(CaptionBank.build(enc, [world.caption(world.Scene(*c)) for c in world.all_combinations()]))

    def decode(fn, emb):
        return [t for i in range(0, len(emb), batch) for t in fn(emb[i:i + batch])]

    rows = {}
    for kind, (emb, scenes) in targets.items():
        res = {}
        t = time.time()
        res["greedy"] = exact(decode(inv.greedy, emb), scenes)
        res["beam top-1"] = exact(decode(lambda e: [c[0] for c in inv.candidates(e, candidates)[0]], emb), scenes)
        for f in fluency:
            inv.reranker = Reranker(enc, candidates, f)
            res[f"rerank (fluency {f:g})"] = exact(decode(inv.generate, emb), scenes)
        inv.reranker = None
        res["retrieval (336 captions)"] = exact(bank.generate(emb), scenes)
        res["seconds"] = round(time.time() - t, 1)
        rows[kind] = res
    return {"preset": preset, "n": n, "seed": seed, "candidates": candidates, "exact_match": rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="shapes-mini")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--seed", type=int, default=20240, help="held-out scenes (the inverter trained on seed 0's stream)")
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--fluency", default="0,0.1,0.3,1", help="fluency weights to try, comma separated")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the figures here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = run(a.preset, a.n, a.seed, a.candidates, tuple(float(x) for x in a.fluency.split(",")))
    print(f"exact match on {out['n']} held-out scenes (seed {out['seed']}), {out['candidates']} beam candidates")
    kinds = list(out["exact_match"])
    methods = [k for k in out["exact_match"]["image"] if k != "seconds"]
    print(f"{'method':28s}" + "".join(f"{k:>8s}" for k in kinds))
    for m in methods:
        print(f"{m:28s}" + "".join(f"{out['exact_match'][k][m]:8.3f}" for k in kinds))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
