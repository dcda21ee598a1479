"""The `blend` command drives the same API: its outputs are checked for meaning, not just existence."""
import random

from PIL import Image

from blend import world
from blend.cli import main


def colour_changes(n: int = 4, seed: int = 5) -> list[tuple[world.Scene, world.Scene]]:
    """(scene, the same scene in another colour) pairs of the training split, the first the README's."""
    rng = random.Random(seed)
    first = world.Scene("red", "white", "circle", "large")
    scenes = [first] + world.sample_scenes(n - 1, seed, split="train")
    return [(s, world.variant(rng, s, "color", split="train", value="green" if s is first else None)) for s in scenes]


def test_mix_changes_the_colour_and_prints_the_sentence(tmp_path, capsys):
    right_pictures = right_sentences = 0
    pairs = colour_changes()
    for i, (x, y) in enumerate(pairs):
        src, out = tmp_path / f"x{i}.png", tmp_path / f"out{i}.png"
        world.render(x, 128).save(src)
        code = main(["mix", "--image", str(src), "--text", y.color, "--text", x.color, "--weights", "1,1,-1",
                     "--out", str(out), "--device", "cpu"])
        assert code == 0
        right_pictures += world.read_attributes(Image.open(out)).matches(y)  # every attribute, the colour changed
        right_sentences += capsys.readouterr().out.strip() == world.caption(y)
    assert right_pictures >= len(pairs) - 1 and right_sentences >= len(pairs) - 1, (right_pictures, right_sentences)


def test_bad_weights_are_an_error_not_a_crash(tmp_path, capsys):
    code = main(["mix", "--text", "red", "--text", "green", "--weights", "1,x", "--device", "cpu"])
    assert code == 2 and "--weights" in capsys.readouterr().err


def test_path_writes_a_strip_and_gif(tmp_path, capsys):
    strip, gif = tmp_path / "p.png", tmp_path / "p.gif"
    a = world.Scene("red", "blue", "circle", "small", "left")
    z = world.Scene("white", "black", "square", "large", "right", "top")
    code = main(["path", world.caption(a), world.caption(z), "--n", "4", "--out", str(strip), "--gif", str(gif),
                 "--device", "cpu"])
    assert code == 0 and strip.stat().st_size > 0 and gif.stat().st_size > 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].endswith(world.caption(a)) and lines[-1].endswith(world.caption(z))


def test_train_takes_the_stages():
    from blend.cli import build_parser

    args = build_parser().parse_args(["train", "shapes-mini", "--stages", "vae,decoder", "--threads", "2", "--quick"])
    assert (args.what, args.stages, args.threads, args.quick) == ("shapes-mini", "vae,decoder", 2, True)
    assert build_parser().parse_args(["train", "shapes-mini"]).stages is None  # every stage, in order


def test_an_unknown_stage_is_named(tmp_path, capsys):
    code = main(["train", "shapes-mini", "--out", str(tmp_path / "b"), "--stages", "clip,nope", "--quick"])
    assert code == 2 and "nope" in capsys.readouterr().err


def test_presets_lists_shapes_mini(capsys):
    assert main(["presets"]) == 0
    assert "shapes-mini" in capsys.readouterr().out


def test_serve_ray_passes_the_device_to_the_model_replicas(monkeypatch):
    """`--device` with `--ray` reaches the replicas (it was ignored): each replica loads the preset there."""
    import blend.serve.ray_app as ray_app

    seen = {}
    monkeypatch.setattr(ray_app, "serve_ray", lambda preset, **kw: seen.update(kw, preset=preset))
    assert main(["serve", "--ray", "--device", "cpu", "--replicas", "2"]) == 0
    assert (seen["preset"], seen["device"], seen["replicas"]) == ("shapes-mini", "cpu", 2)
