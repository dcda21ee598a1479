"""Blend operations: plain, stateless functions on unit embeddings, (N, D) or (D,) float tensors."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from . import checks

EPS = 1e-8
MAX_POINTS = 10_000  # interpolate n, plane k * k: more points than any decoder could show


def _as_matrix(embs, name: str = "embs") -> torch.Tensor:
    """Accept a (K, D) tensor or a sequence of (D,) tensors; refuse NaN, inf, huge and zero rows (checks.embeddings)."""
    if isinstance(embs, (list, tuple)) and not embs:
        raise ValueError(f"{name} is empty: give at least one embedding")
    return checks.embeddings(embs, name)


def _as_weights(weights, k: int) -> torch.Tensor:
    return checks.weights(weights, k)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Project onto the unit sphere along the last dimension."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Spherical linear interpolation along the great circle (Shoemake 1985), not the element-wise blend.

    a, b: (..., D) (normalized first); t scalar or (...,) -> (..., D) unit vectors.
    """
    a, b = _rows(a, "a"), _rows(b, "b")
    checks.same_dim(("a", a), ("b", b))
    a, b = normalize(a), normalize(b)
    t = torch.as_tensor(t, dtype=torch.float32) if not isinstance(t, (int, float)) else torch.tensor(
        checks.number(t, "t"))
    if not torch.isfinite(t).all():
        raise ValueError(f"t must be finite, got {t.tolist()}")
    if t.ndim and t.shape[-1:] != (1,):
        t = t[..., None]
    if ((a * b).sum(-1) < -1 + 1e-6).any():
        raise ValueError("a and b are opposite (antipodal): every great circle joins them, so slerp is undefined; "
                         "use method='lerp' or pick another endpoint")
    dot = (a * b).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    near = so.abs() < 1e-6  # (nearly) parallel: the arc is a line, lerp is exact enough
    safe = torch.where(near, torch.ones_like(so), so)
    out = torch.sin((1 - t) * omega) / safe * a + torch.sin(t * omega) / safe * b
    return normalize(torch.where(near, (1 - t) * a + t * b, out))


def _rows(x, name: str) -> torch.Tensor:
    """(..., D) finite non-zero float tensor."""
    x = torch.as_tensor(x, dtype=torch.float32) if not torch.is_tensor(x) else x.float()
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name} must be a (..., D) tensor, got shape {tuple(x.shape)}")
    checks.embeddings(x.reshape(-1, x.shape[-1]), name)
    return x


def spherical_mean(embs: torch.Tensor, weights: torch.Tensor, iters: int = 50) -> torch.Tensor:
    """Weighted Fréchet (Karcher) mean on the sphere (Buss & Fillmore 2001): slerp generalised to K points.

    embs (K, D) unit, weights (K,) >= 0 -> (D,) unit.
    """
    w = weights / weights.sum()
    q = normalize((w[:, None] * embs).sum(0))
    for _ in range(iters):
        cos = (embs @ q).clamp(-1.0, 1.0)  # (K,)
        theta = torch.acos(cos)
        sin = torch.sin(theta)
        scale = torch.where(theta > 1e-7, theta / sin.clamp_min(1e-12), torch.ones_like(theta))
        tangent = (w * scale)[:, None] * (embs - cos[:, None] * q)  # log map of each point at q
        step = tangent.sum(0)
        n = step.norm()
        if n < 1e-9:
            break
        q = normalize(torch.cos(n) * q + torch.sin(n) * step / n)  # exp map back onto the sphere
    return q


def mix(embs, weights: Sequence[float] | None = None, method: str = "lerp") -> torch.Tensor:
    """Weighted blend of K embeddings -> (D,) unit vector.

    Args:
        embs: (K, D) tensor or list of (D,) tensors.
        weights: K numbers; None means equal weights. `lerp` allows negatives (arithmetic such as a - b + c).
        method: "lerp" (normalized weighted sum) or "slerp" (weighted spherical mean; weights must be >= 0).
    Returns:
        (D,) float32 unit vector.
    """
    embs = _as_matrix(embs)
    w = _as_weights(weights, embs.shape[0])
    embs = normalize(embs)
    w = w / w.abs().max()  # a mix does not depend on the weights' scale; this keeps 1e20-size weights finite
    if method == "lerp":
        total = (w[:, None] * embs).sum(0)
        if total.norm() < 1e-6:
            raise ValueError("the weighted sum is the zero vector (the terms cancel out): change the weights")
        return normalize(total)
    if method == "slerp":
        if (w < 0).any():
            raise ValueError("slerp needs non-negative weights; use method='lerp' for arithmetic with negative weights")
        if embs.shape[0] == 2:
            return slerp(embs[0], embs[1], float(w[1] / w.sum()))
        return spherical_mean(embs, w)
    raise ValueError(f"method must be 'lerp' or 'slerp', got {method!r}")


def interpolate(a: torch.Tensor, b: torch.Tensor, n: int, method: str = "slerp") -> torch.Tensor:
    """n evenly spaced points from a to b, both ends included -> (n, D) unit vectors."""
    n = checks.whole(n, "n", 2, MAX_POINTS)
    a, b = _as_matrix(a, "a")[0], _as_matrix(b, "b")[0]
    checks.same_dim(("a", a), ("b", b))
    t = torch.linspace(0, 1, int(n))
    if method == "slerp":
        return slerp(a[None].expand(len(t), -1), b[None].expand(len(t), -1), t)
    if method == "lerp":
        return normalize((1 - t)[:, None] * normalize(a) + t[:, None] * normalize(b))
    raise ValueError(f"method must be 'lerp' or 'slerp', got {method!r}")


def direction(pos, neg) -> torch.Tensor:
    """An attribute direction: mean of the positive examples minus mean of the negatives -> (D,).

    Not normalized: strength 1 moves a point by the whole difference between the two concepts.
    """
    pos, neg = normalize(_as_matrix(pos, "pos")), normalize(_as_matrix(neg, "neg"))
    checks.same_dim(("pos", pos), ("neg", neg))
    return pos.mean(0) - neg.mean(0)


def apply_directions(base: torch.Tensor, directions, strengths: Sequence[float]) -> torch.Tensor:
    """normalize(base + sum_i strength_i * direction_i) -> (D,) unit vector."""
    base = normalize(_as_matrix(base, "base")[0])
    if torch.is_tensor(directions) and directions.ndim == 1:
        directions = directions[None]
    if isinstance(directions, (list, tuple)) and not len(directions):
        dirs = torch.zeros(0, base.shape[0])  # zero directions are allowed: no move
    else:
        dirs = _directions(directions)
    checks.same_dim(("base", base), ("directions", dirs))
    if isinstance(strengths, torch.Tensor):
        strengths = strengths.reshape(-1).tolist()
    if isinstance(strengths, (str, bytes)) or not hasattr(strengths, "__len__"):
        raise ValueError(f"strengths must be a list of numbers, got {strengths!r}")
    s = torch.tensor([checks.number(x, f"strengths[{i}]", -MAX_STRENGTH, MAX_STRENGTH)
                      for i, x in enumerate(strengths)], dtype=torch.float32)
    if s.numel() != dirs.shape[0]:
        raise ValueError(f"{dirs.shape[0]} directions but {s.numel()} strengths: give one strength per direction")
    out = base + (s[:, None] * dirs).sum(0)
    if out.norm() < 1e-6:
        raise ValueError("the directions cancel the base out: lower the strengths")
    return normalize(out)


MAX_STRENGTH = 1e3


def _directions(directions) -> torch.Tensor:
    """(K, D) finite rows; a direction may be zero (its two sides encode alike)."""
    if torch.is_tensor(directions):
        rows = directions.float().reshape(directions.shape[0], -1) if directions.ndim else directions.reshape(1, 1)
    else:
        try:
            rows = [torch.as_tensor(x, dtype=torch.float32).reshape(-1) for x in directions]
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError("directions must be (D,) vectors or a (K, D) tensor") from e
        if len({r.shape[0] for r in rows}) > 1:
            raise ValueError(f"directions have different dimensions {sorted({r.shape[0] for r in rows})}")
        rows = torch.stack(rows)
    if not torch.isfinite(rows).all() or (rows.abs() > checks.MAX_VALUE).any():
        raise ValueError("directions must be finite and of unit scale")
    return rows


def plane(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, k: int) -> torch.Tensor:
    """A k x k grid on the plane through a, b, c: point (i, j) = a + u_j (b - a) + v_i (c - a), normalized.

    Corners: a (top left), b (top right), c (bottom left), and the analogy b + c - a (bottom right).
    Returns (k, k, D) unit vectors.
    """
    k = checks.whole(k, "k", 2, int(MAX_POINTS ** 0.5))
    a, b, c = (normalize(_as_matrix(x, n)[0]) for x, n in ((a, "a"), (b, "b"), (c, "c")))
    checks.same_dim(("a", a), ("b", b), ("c", c))
    u = torch.linspace(0, 1, int(k))
    grid = a + u[None, :, None] * (b - a) + u[:, None, None] * (c - a)  # (k, k, D)
    if (grid.norm(dim=-1) < 1e-6).any():
        raise ValueError("the plane passes through the origin: choose anchors that are not opposite")
    return normalize(grid)


def mean_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Cross the modality gap by a constant offset (Liang et al. 2022): normalize(x + shift)."""
    return normalize(x + shift)
