"""The `blend` command, over the same API as `import blend`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


class _Term(argparse.Action):
    """--image / --text append (kind, value) to one ordered list, so weights follow the order given."""

    def __call__(self, parser, namespace, values, option_string=None):
        terms = list(getattr(namespace, "terms", None) or [])
        terms.append((self.dest.removeprefix("term_"), values))
        namespace.terms = terms


def _weights(text: str | None, k: int) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--weights must be numbers separated by commas, got {text!r}") from None


def _encode_term(b, kind: str, value: str):
    return b.encode_images([value]) if kind == "image" else b.encode_texts([value])


def _term_from_arg(value: str) -> tuple[str, str]:
    """`image:PATH`, `text:WORDS`, or a path to an existing file (an image), else a text."""
    for kind in ("image", "text"):
        if value.startswith(kind + ":"):
            return kind, value[len(kind) + 1:]
    return ("image", value) if Path(value).is_file() else ("text", value)


def cmd_mix(args):
    import torch

    import blend

    if not args.terms:
        raise ValueError("give at least one --image or --text")
    b = blend.load(args.preset, device=args.device)
    embs = torch.cat([_encode_term(b, k, v) for k, v in args.terms])
    m = blend.mix(embs, _weights(args.weights, len(args.terms)), method=args.method)
    print(b.decode_texts(m)[0])
    if args.out:
        images = [b.decode_images(m, seed=args.seed + i, steps=args.steps)[0] for i in range(args.n)]
        out = Path(args.out)
        if len(images) == 1:
            images[0].save(out)
        else:
            from .viz import grid
            grid(images, cols=len(images)).save(out)
        print(f"wrote {out}", file=sys.stderr)


def cmd_path(args):
    import blend
    from .viz import save_gif, strip

    b = blend.load(args.preset, device=args.device)
    a = _encode_term(b, *_term_from_arg(args.start))
    z = _encode_term(b, *_term_from_arg(args.end))
    pts = blend.interpolate(a[0], z[0], args.n, method=args.method)
    texts = b.decode_texts(pts)
    images = b.decode_images(pts, seed=args.seed, steps=args.steps)
    for i, t in enumerate(texts):
        print(f"{i / (len(texts) - 1):.2f}\t{t}")
    strip(images, labels=[f"{i / (len(texts) - 1):.2f}" for i in range(len(texts))]).save(args.out)
    if args.gif:
        save_gif(images, args.gif)
    print(f"wrote {args.out}" + (f" and {args.gif}" if args.gif else ""), file=sys.stderr)


def cmd_presets(args):
    from .presets import scan

    for name, spec in sorted(scan().items()):
        print(f"{name:16s} {spec.get('description', '')}")


def cmd_train(args):
    if args.what == "shapes-mini":
        from .train.shapes_mini import train_shapes_mini

        times = train_shapes_mini(args.out or "models/shapes-mini", work=args.work, seed=args.seed, quick=args.quick,
                                  stages=tuple(args.stages.split(",")), threads=args.threads)
        print(f"done: {times}")
    else:
        raise ValueError(f"unknown training target {args.what!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="blend", description="Blend meaning across images and texts in CLIP space.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--preset", default="shapes-mini", help="preset name or folder (see `blend presets`)")
        sp.add_argument("--device", default="auto")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--steps", type=int, default=None, help="sampler steps (default: the preset's)")

    m = sub.add_parser("mix", help="mix images and texts with weights; print the sentence, write the image")
    common(m)
    m.add_argument("--image", dest="term_image", action=_Term, help="an image term (repeatable)")
    m.add_argument("--text", dest="term_text", action=_Term, help="a text term (repeatable)")
    m.add_argument("--weights", help="one weight per term in the order given, e.g. 1,1,-1")
    m.add_argument("--method", default="lerp", choices=["lerp", "slerp"])
    m.add_argument("--out", help="write the decoded image here")
    m.add_argument("--n", type=int, default=1, help="images from seeds seed..seed+n-1, side by side")
    m.set_defaults(func=cmd_mix, terms=[])

    pa = sub.add_parser("path", help="interpolate between two terms; write a strip (and a GIF)")
    common(pa)
    pa.add_argument("start", help="image path or text (prefix image: or text: to be explicit)")
    pa.add_argument("end")
    pa.add_argument("--n", type=int, default=8)
    pa.add_argument("--method", default="slerp", choices=["lerp", "slerp"])
    pa.add_argument("--out", default="path.png")
    pa.add_argument("--gif")
    pa.set_defaults(func=cmd_path)

    pr = sub.add_parser("presets", help="list the presets")
    pr.set_defaults(func=cmd_presets)

    t = sub.add_parser("train", help="train models: `shapes-mini` (the embedded bundle)")
    t.add_argument("what", choices=["shapes-mini"])
    t.add_argument("--out", help="bundle folder (default models/shapes-mini)")
    t.add_argument("--work", help="checkpoint folder (default: beside the bundle)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quick", action="store_true", help="a few steps of each stage, to check the pipeline")
    t.add_argument("--stages", default="clip,decoder,inverter")
    t.add_argument("--threads", type=int, default=None)
    t.set_defaults(func=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as e:
        print(f"blend: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
