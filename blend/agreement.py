"""Agreement check: does a decoded picture show what its point and its sentence say?

Every decoded image is encoded again and compared with the point it was decoded from (a cosine), and with
its sentence: the sentence the image's own embedding decodes to ("what the picture reads as") must say what
the sentence decoded from the point says. In the shapes world that is compared by meaning: every attribute
the sentence names must be the picture's (a partial sentence, "a red star", agrees with a picture that reads
as a whole caption of a red star); elsewhere the two sentences must be the same. Where either check fails,
the result carries a plain warning.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

MIN_COSINE = 0.6  # cos(E(image), point) below this: the picture left its point (preset: agreement.min_cosine)


@dataclass
class Agreement:
    cosine: float  # cos(E(decoded image), the point it was decoded from)
    text_cosine: float  # cos(E(decoded image), T(its sentence)) in the blend space; NaN without a sentence
    reading: str  # the sentence decoded from the image's own embedding
    ok: bool
    warning: str = ""

    def to_dict(self) -> dict:
        return {k: ((None if v != v else round(v, 4)) if isinstance(v, float) else v)  # NaN (no sentence): null
                for k, v in asdict(self).items()}


def min_cosine(blender) -> float:
    return float((getattr(blender, "preset", None) or {}).get("agreement", {}).get("min_cosine", MIN_COSINE))


def same_meaning(blender, reading: str, sentence: str) -> bool:
    """Whether the picture's reading says what the sentence says (see the module docstring)."""
    if (getattr(blender, "preset", None) or {}).get("world") == "shapes":
        from . import world

        read, said = world.parse_description(reading), world.parse_description(sentence)
        if read is not None and said is not None:
            return all(read.get(k) == v for k, v in said.items())
    return reading == sentence


def check_agreement(blender, points: torch.Tensor, images: list, sentences: list[str],
                    which: list[int] | None = None) -> list[Agreement]:
    """One Agreement per image.

    Args:
        points: (M, D) the points decoded.
        images: N decoded images; image i was decoded from points[which[i]] (default: which[i] = i).
        sentences: M sentences, one per point.
    """
    which = _which(images, which)
    if not images:
        return []
    e = blender.encode_images(images)  # (N, D)
    return _judge(blender, points, e, sentences, blender.decode_texts(e), which)


def sentences_and_agreement(blender, points: torch.Tensor, images: list, which: list[int] | None = None,
                            check: bool = True) -> tuple[list[str], list[Agreement]]:
    """The points' sentences and one Agreement per image, as `decode_texts(points)` and `check_agreement`
    give them, with the points and the images' embeddings decoded to sentences in one batch (one pass of
    the sentence decoder instead of two; greedy decoding gives each row the same sentence in any batch).
    `check=False`: the sentences alone, and no Agreement."""
    which = _which(images, which)
    if not images or not check:
        return blender.decode_texts(points), []
    e = blender.encode_images(images)  # (N, D)
    texts = blender.decode_texts(torch.cat([points.to(e), e]))
    sentences, readings = texts[:len(points)], texts[len(points):]
    return sentences, _judge(blender, points, e, sentences, readings, which)


def _which(images: list, which: list[int] | None) -> list[int]:
    which = list(range(len(images))) if which is None else which
    if len(which) != len(images):
        raise ValueError(f"{len(images)} images but {len(which)} point indices")
    return which


def _judge(blender, points: torch.Tensor, e: torch.Tensor, sentences: list[str], readings: list[str],
           which: list[int]) -> list[Agreement]:
    p = points[which].to(e)  # (N, D)
    said = [j for j in sorted(set(which)) if sentences[j].strip()]  # a point may decode to no words at all
    t = dict(zip(said, blender.encode_texts([sentences[j] for j in said]).to(e))) if said else {}  # j -> (D,)
    cos = (e * p).sum(1).tolist()
    tcos = [float(row @ t[j]) if j in t else float("nan") for row, j in zip(e, which)]
    floor = min_cosine(blender)
    out = []
    for c, tc, reading, j in zip(cos, tcos, readings, which):
        problems = []
        if not sentences[j].strip():
            problems.append("the point decodes to no sentence")
        elif not same_meaning(blender, reading, sentences[j]):
            problems.append(f"the picture reads as “{reading}”, the sentence says “{sentences[j]}”")
        if c < floor:
            problems.append(f"the picture is far from its point (cosine {c:.2f} < {floor:.2f})")
        warning = ("Picture and sentence disagree: " + "; ".join(problems) + ".") if problems else ""
        out.append(Agreement(c, tc, reading, not problems, warning))
    return out
