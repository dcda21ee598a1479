"""blend: cross-modal latent blending of images and text in CLIP space.

    import blend
    b = blend.load("shapes-mini")
    m = blend.mix(torch.cat([b.encode_images([img]), b.encode_texts(["red", "green"])]), [1, -1, 1])
    b.decode_images(m, seed=0)[0].save("out.png"); print(b.decode_texts(m)[0])
"""
from .blender import Blender, load
from .directions import DirectionLibrary
from .ops import apply_directions, direction, interpolate, mix, normalize, plane, slerp
from .presets import list_presets
from .history import History
from .recipe import Recipe
from .run import run_recipe

__all__ = ["Blender", "load", "list_presets", "mix", "slerp", "interpolate", "direction", "apply_directions",
           "plane", "normalize", "Recipe", "History", "run_recipe", "DirectionLibrary"]
__version__ = "0.1.0"
