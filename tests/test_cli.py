"""The `blend` command drives the same API: its outputs are checked for meaning, not just existence."""
from blend import world
from blend.cli import main


def test_mix_changes_the_colour_and_prints_the_sentence(tmp_path, capsys):
    src = tmp_path / "red.png"
    world.render(world.Scene("red", "white", "circle", "large"), 128).save(src)
    out = tmp_path / "out.png"
    code = main(["mix", "--image", str(src), "--text", "green", "--text", "red", "--weights", "1,1,-1",
                 "--out", str(out), "--device", "cpu"])
    assert code == 0
    from PIL import Image

    assert world.read_attributes(Image.open(out)).attributes == ("green", "white", "circle", "large")
    assert capsys.readouterr().out.strip() == "a large green circle on a white background"


def test_bad_weights_are_an_error_not_a_crash(tmp_path, capsys):
    code = main(["mix", "--text", "red", "--text", "green", "--weights", "1,x", "--device", "cpu"])
    assert code == 2 and "--weights" in capsys.readouterr().err


def test_path_writes_a_strip_and_gif(tmp_path, capsys):
    strip, gif = tmp_path / "p.png", tmp_path / "p.gif"
    code = main(["path", "a small red circle on a blue background", "a large white square on a black background",
                 "--n", "4", "--out", str(strip), "--gif", str(gif), "--device", "cpu"])
    assert code == 0 and strip.stat().st_size > 0 and gif.stat().st_size > 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].endswith("a small red circle on a blue background")
    assert lines[-1].endswith("a large white square on a black background")


def test_presets_lists_shapes_mini(capsys):
    assert main(["presets"]) == 0
    assert "shapes-mini" in capsys.readouterr().out
