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

    from . import checks
    from .serve.config import ServeConfig

    if not args.terms:
        raise ValueError("give at least one --image or --text")
    checks.whole(args.n, "--n", 1, ServeConfig.from_env().max_n_seeds)
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

    from . import checks
    from .serve.config import ServeConfig

    checks.whole(args.n, "--n", 2, ServeConfig.from_env().max_n)
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

        stages = tuple(s.strip() for s in args.stages.split(",") if s.strip()) if args.stages else None
        kwargs = {"stages": stages} if stages else {}
        times = train_shapes_mini(args.out or "models/shapes-mini", work=args.work, seed=args.seed, quick=args.quick,
                                  threads=args.threads, **kwargs)
        print(f"done: {times}")
    elif args.what == "inverter":
        from .train.inverter import train_corpus_inverter

        if not args.encoder or not args.corpus or not args.out:
            raise ValueError("blend train inverter needs --encoder, --corpus and --out")
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        model = train_corpus_inverter(args.encoder, args.corpus, args.out, steps=args.steps, batch=args.batch,
                                      lr=args.lr, noise=args.noise, seed=args.seed, lm=args.lm,
                                      prefix_len=args.prefix_len, max_tokens=args.max_tokens, device=args.device,
                                      work=args.work, log=args.log, stop_at=args.stop_at)
        print(f"stopped at step {args.stop_at}; run again to resume" if model is None else f"wrote {args.out}")
    else:
        raise ValueError(f"unknown training target {args.what!r}")


def cmd_index(args):
    import blend
    from .calibrate import index

    b = blend.load(args.preset, device=args.device)
    print(f"wrote {index(b, args.captions, args.out)}")


def cmd_calibrate(args):
    import blend
    from .calibrate import calibrate

    b = blend.load(args.preset, device=args.device)
    print(f"wrote {calibrate(b, args.images, args.captions, args.out, paired=args.paired)}")


def cmd_serve(args):
    if args.ray:
        from .serve.ray_app import serve_ray

        serve_ray(args.preset, host=args.host, port=args.port, replicas=args.replicas, num_gpus=args.num_gpus,
                  num_cpus=args.num_cpus, max_replicas=args.max_replicas, ingress_replicas=args.ingress_replicas,
                  front=args.front, address=args.address, device=args.device)
    else:
        from .serve.run import serve

        serve(args.preset, host=args.host, port=args.port, device=args.device, ui=not args.no_ui,
              max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, max_queue=args.max_queue,
              model_process=False if args.in_process else None, model_threads=args.model_threads)


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

    sv = sub.add_parser("serve", help="serve the REST API (/v1, /metrics) beside the Gradio UI")
    sv.add_argument("--preset", default="shapes-mini")
    sv.add_argument("--host", default="127.0.0.1", help="0.0.0.0: every interface (set BLEND_API_KEYS first)")
    sv.add_argument("--port", type=int, default=7860)
    sv.add_argument("--device", default="auto")
    sv.add_argument("--no-ui", action="store_true", help="the REST API only")
    sv.add_argument("--max-batch", type=int, default=None, help="rows the model takes together (default 8)")
    sv.add_argument("--batch-wait-ms", type=float, default=None, help="wait to fill a batch (default 10)")
    sv.add_argument("--max-queue", type=int, default=None, help="rows waiting for the model; more get 429 (default 256)")
    sv.add_argument("--in-process", action="store_true",
                    help="run the model in the server's own process (default on the CPU: a child process, so "
                         "that HTTP work and the model do not share one GIL)")
    sv.add_argument("--model-threads", type=int, default=None, help="torch threads of the model process")
    sv.add_argument("--ray", action="store_true", help="deploy on Ray Serve (pip install 'blend[ray]')")
    sv.add_argument("--replicas", type=int, default=1, help="Ray Serve model replicas (the minimum with --max-replicas)")
    sv.add_argument("--max-replicas", type=int, default=None, help="autoscale the model replicas up to this many")
    sv.add_argument("--num-gpus", type=float, default=0, help="GPUs per Ray model replica")
    sv.add_argument("--num-cpus", type=float, default=1, help="CPUs per Ray model replica")
    sv.add_argument("--front", choices=["local", "ray"], default="local",
                    help="who serves HTTP: this process, the models on Ray (a dying replica fails no request); "
                         "or Ray Serve's proxy and API replicas (a dying API replica's requests get a bare 500)")
    sv.add_argument("--ingress-replicas", type=int, default=1, help="with --front ray: Ray replicas of the API")
    sv.add_argument("--address", default=None, help="join this Ray cluster (default: start a local one)")
    sv.set_defaults(func=cmd_serve)

    pr = sub.add_parser("presets", help="list the presets")
    pr.set_defaults(func=cmd_presets)

    t = sub.add_parser("train", help="train models: `shapes-mini` (the embedded bundle) or a text `inverter`")
    t.add_argument("what", choices=["shapes-mini", "inverter"])
    t.add_argument("--out", help="bundle folder (default models/shapes-mini); for inverter: its folder")
    t.add_argument("--work", help="checkpoint folder (default: beside the bundle)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quick", action="store_true", help="a few steps of each stage, to check the pipeline")
    t.add_argument("--stages", default=None, help="shapes-mini: a comma list of clip, clip-image, vae, "
                                                   "vae-decoder, prior, draft, decoder, inverter (default: all, in that order)")
    t.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    inv = t.add_argument_group("inverter", "blend train inverter --encoder ViT-L-14/openai --corpus captions.txt "
                                           "--out models/inverter-vitl14")
    inv.add_argument("--encoder", help="MODEL/PRETRAINED, hf-hub:ORG/NAME, local-dir:PATH or a preset name")
    inv.add_argument("--corpus", help="text file, one caption a line")
    inv.add_argument("--steps", type=int, default=5000)
    inv.add_argument("--batch", type=int, default=64)
    inv.add_argument("--lr", type=float, default=None, help="default 1e-4 on GPT-2 weights, 1e-3 from a config")
    inv.add_argument("--noise", type=float, default=0.5, help="CapDec noise: norm added to unit text embeddings")
    inv.add_argument("--lm", default="gpt2", help="GPT-2 weights (hub id or folder); 'none': a small one from a config")
    inv.add_argument("--prefix-len", type=int, default=10)
    inv.add_argument("--max-tokens", type=int, default=40)
    inv.add_argument("--device", default="auto")
    inv.add_argument("--log", help="append JSON-lines metrics here")
    inv.add_argument("--stop-at", type=int, default=None, help="stop after this step (resume by running again)")
    t.set_defaults(func=cmd_train)

    ix = sub.add_parser("index", help="embed a caption bank once for the retrieval text decoder")
    ix.add_argument("captions", help="text file, one caption a line")
    ix.add_argument("--preset", default="shapes-mini")
    ix.add_argument("--out", help="bank file (default: the preset's retrieval source)")
    ix.add_argument("--device", default="auto")
    ix.set_defaults(func=cmd_index)

    ca = sub.add_parser("calibrate", help="measure a preset's embedding scale, gap map and negative embedding")
    ca.add_argument("preset")
    ca.add_argument("--images", required=True, help="a folder of images like the ones you will blend")
    ca.add_argument("--captions", required=True, help="text file, one caption a line")
    ca.add_argument("--paired", action="store_true", help="caption i describes image i (sorted by name): also fit "
                                                          "the linear gap map")
    ca.add_argument("--out", help="stats file (default: the one the preset names)")
    ca.add_argument("--device", default="auto")
    ca.set_defaults(func=cmd_calibrate)
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
