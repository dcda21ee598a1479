"""Request and response bodies of the REST API; every field documented in the OpenAPI schema."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Finite = Annotated[float, Field(allow_inf_nan=False)]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1, description="seed of the start noise")]
Steps = Annotated[int | None, Field(default=None, ge=1, le=200, description="sampler steps; null: the preset's")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TermIn(Strict):
    kind: Literal["image", "text"] = Field(description="image: an example's file name or a PNG/JPEG data URI; "
                                                       "text: some words")
    value: str = Field(description="the example name, the data:image/...;base64 URI, or the words")
    weight: Finite = Field(1.0, description="weight in the mix; negative subtracts")
    muted: bool = Field(False, description="kept in the recipe, left out of the mix")


class DirectionUse(Strict):
    name: str = Field(description="a direction from GET /v1/directions")
    strength: Finite = Field(1.0, description="how far to move along it")


class MixIn(Strict):
    terms: list[TermIn] = Field(min_length=1, description="images and texts to mix")
    method: Literal["lerp", "slerp"] = Field("lerp", description="normalised weighted sum, or spherical mean")
    directions: list[DirectionUse] = Field(default_factory=list, description="directions applied after the mix")
    seed: Seed = 0
    n_seeds: int = Field(1, ge=1, le=16, description="images from seeds seed, seed + 1, ...")
    steps: Steps = None
    format: Literal["base64", "png"] = Field("base64", description="png: the first image as image/png")


class EncodeIn(Strict):
    terms: list[TermIn] = Field(min_length=1, description="images and texts to embed, in order")


class DecodeIn(Strict):
    embeddings: list[list[Finite]] | list[Finite] = Field(description="(N, D) rows or one (D,) row of this "
                                                                      "preset's space")
    seed: Seed | list[Seed] = Field(0, description="one seed for every row, or one per row")
    steps: Steps = None


class PathIn(Strict):
    start: TermIn
    end: TermIn
    n: int = Field(8, ge=2, le=1000, description="frames, both ends included")
    method: Literal["lerp", "slerp"] = "slerp"
    seed: Seed = 0
    steps: Steps = None


class PlaneIn(Strict):
    a: TermIn
    b: TermIn
    c: TermIn
    k: int = Field(3, ge=2, le=100, description="the grid is k x k; corners a, b, c and b + c - a")
    seed: Seed = 0
    steps: Steps = None


class DirectionIn(Strict):
    name: str = Field(description="one line, no slashes")
    description: str = ""
    pairs: list[list[str]] = Field(default_factory=list, description="[[positive text, negative text], ...]")
    positive: list[str] = Field(default_factory=list, description="example images (names or data URIs)")
    negative: list[str] = Field(default_factory=list, description="example images (names or data URIs)")


class RenameIn(Strict):
    name: str = Field(description="the new name")


class Images(BaseModel):
    images: list[str] = Field(description="PNG data URIs, one per picture")
    texts: list[str] = Field(description="decoded sentences, one per embedding")
    embeddings: list[list[float]] = Field(description="the decoded embeddings, (M, D)")


class MixOut(Images):
    embedding: list[float] = Field(description="the mix, (D,) unit vector")
    recipe: dict = Field(description="the resolved recipe: run it again for the same images")
    warnings: list[str] = Field(default_factory=list)


class EncodeOut(BaseModel):
    embeddings: list[list[float]]
    dim: int


class DirectionOut(BaseModel):
    name: str
    source: Literal["default", "user"]
    description: str = ""
    pairs: list[list[str]] = Field(default_factory=list)
    positive: list[str] = Field(default_factory=list)
    negative: list[str] = Field(default_factory=list)


class DirectionsOut(BaseModel):
    directions: list[DirectionOut]


class PresetsOut(BaseModel):
    current: str
    presets: list[dict]


class Error(BaseModel):
    error: str = Field(description="what was wrong and how to fix it")
    error_id: str = Field(description="quote it when reporting a problem; the server log has the details")
