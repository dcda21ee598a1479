import random

import pytest

from blend import world


def test_reader_reads_every_render_right():
    for combo in world.all_combinations():
        for dx, dy in ((-2, -2), (0, 0), (2, 1)):
            scene = world.Scene(*combo, dx=dx, dy=dy)
            assert world.read_attributes(world.render(scene)).matches(scene), scene


def test_reader_reads_upscaled_renders():
    scene = world.Scene("orange", "black", "triangle", "small", 1, -2)
    assert world.read_attributes(world.render(scene, 256)).matches(scene)


def test_reader_sees_no_shape_on_a_flat_image():
    from PIL import Image

    reading = world.read_attributes(Image.new("RGB", (32, 32), world.PALETTE["blue"]))
    assert reading.background == "blue" and reading.shape is None


def test_spec_geometry():
    img = world.render(world.Scene("red", "white", "square", "large"))
    assert img.size == (32, 32)
    assert img.getpixel((16, 16)) == world.PALETTE["red"]
    assert img.getpixel((0, 0)) == world.PALETTE["white"]
    assert len(world.all_combinations()) == 8 * 7 * 3 * 2


def test_captions():
    s = world.Scene("orange", "blue", "circle", "small")
    assert world.caption(s) == "a small orange circle on a blue background"
    assert world.partial_caption(color="orange", shape="square") == "an orange square"
    assert world.partial_caption(background="orange") == "on an orange background"
    assert world.partial_caption(color="red") == "red"
    with pytest.raises(ValueError):
        world.partial_caption()


def test_scene_rejects_impossible_scenes():
    with pytest.raises(ValueError, match="differ"):
        world.Scene("red", "red", "circle", "small")
    with pytest.raises(ValueError, match="shape"):
        world.Scene("red", "blue", "hexagon", "small")


def test_sampling_is_seeded():
    assert world.sample_scenes(20, seed=3) == world.sample_scenes(20, seed=3)
    assert world.sample_scenes(20, seed=3) != world.sample_scenes(20, seed=4)
    batch = world.distinct_batch(random.Random(0), 100)
    assert len({s.attributes for s in batch}) == 100
