import math

import pytest
import torch

import blend
from blend.ops import normalize, spherical_mean


def unit(d=16, seed=0):
    return normalize(torch.randn(d, generator=torch.Generator().manual_seed(seed)))


def test_slerp_stays_on_the_great_circle():
    a, b = unit(seed=1), unit(seed=2)
    omega = math.acos(float(a @ b))
    for t in (0.0, 0.25, 0.5, 0.9, 1.0):
        m = blend.slerp(a, b, t)
        assert m.norm() == pytest.approx(1, abs=1e-5)
        # angles to the ends split omega in the ratio t : 1 - t (element-wise lerp would not)
        assert math.acos(min(1.0, float(m @ a))) == pytest.approx(t * omega, abs=1e-3)
        assert math.acos(min(1.0, float(m @ b))) == pytest.approx((1 - t) * omega, abs=1e-3)


def test_slerp_of_parallel_vectors():
    a = unit()
    assert torch.allclose(blend.slerp(a, a, 0.3), a, atol=1e-6)


def test_mix_lerp_is_normalized_weighted_sum_and_allows_negatives():
    a, b, c = unit(seed=1), unit(seed=2), unit(seed=3)
    m = blend.mix(torch.stack([a, b, c]), [1, -1, 1])
    assert torch.allclose(m, normalize(a - b + c), atol=1e-6)


def test_mix_slerp_of_two_is_slerp_and_of_many_is_the_spherical_mean():
    a, b, c = unit(seed=1), unit(seed=2), unit(seed=3)
    assert torch.allclose(blend.mix([a, b], [1, 3], method="slerp"), blend.slerp(a, b, 0.75), atol=1e-5)
    m = blend.mix([a, b, c], [1, 1, 1], method="slerp")
    # the Karcher mean's log-map residual vanishes: it is where the tangent vectors cancel
    logs = [(math.acos(float(x @ m)) / math.sin(math.acos(float(x @ m)))) * (x - (x @ m) * m) for x in (a, b, c)]
    assert torch.stack(logs).sum(0).norm() < 1e-4
    assert torch.allclose(spherical_mean(torch.stack([a, a]), torch.tensor([1.0, 2.0])), a, atol=1e-6)


@pytest.mark.parametrize("weights, message", [
    ([0, 0], "all zero"), ([1, float("nan")], "finite"), ([1], "one weight per term"), ([1, float("inf")], "finite"),
])
def test_mix_rejects_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        blend.mix(torch.stack([unit(seed=1), unit(seed=2)]), weights)


def test_mix_rejects_bad_embeddings_and_methods():
    a = unit()
    with pytest.raises(ValueError, match="zero"):
        blend.mix(torch.stack([a, torch.zeros_like(a)]), [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        blend.mix(torch.stack([a, torch.full_like(a, float("nan"))]), [1, 1])
    with pytest.raises(ValueError, match="cancel"):
        blend.mix(torch.stack([a, a]), [1, -1])
    with pytest.raises(ValueError, match="non-negative"):
        blend.mix(torch.stack([a, unit(seed=5)]), [1, -1], method="slerp")
    with pytest.raises(ValueError, match="method"):
        blend.mix(torch.stack([a, unit(seed=5)]), [1, 1], method="cubic")


def test_interpolate_endpoints_and_even_steps():
    a, b = unit(seed=1), unit(seed=2)
    path = blend.interpolate(a, b, 5)
    assert torch.allclose(path[0], a, atol=1e-6) and torch.allclose(path[-1], b, atol=1e-6)
    steps = [math.acos(min(1.0, float(path[i] @ path[i + 1]))) for i in range(4)]
    assert max(steps) - min(steps) < 1e-4  # slerp walks at constant angular speed
    with pytest.raises(ValueError, match="n must"):
        blend.interpolate(a, b, 1)


def test_direction_and_apply():
    a, b = unit(seed=1), unit(seed=2)
    d = blend.direction(torch.stack([b]), torch.stack([a]))
    assert torch.allclose(blend.apply_directions(a, [d], [1.0]), b, atol=1e-6)  # strength 1 goes all the way
    assert torch.allclose(blend.apply_directions(a, [d], [0.0]), a, atol=1e-6)
    with pytest.raises(ValueError, match="one strength per direction"):
        blend.apply_directions(a, [d], [1.0, 2.0])


def test_plane_corners():
    a, b, c = unit(seed=1), unit(seed=2), unit(seed=3)
    g = blend.plane(a, b, c, 4)
    assert g.shape == (4, 4, 16)
    assert torch.allclose(g[0, 0], a, atol=1e-6) and torch.allclose(g[0, -1], b, atol=1e-6)
    assert torch.allclose(g[-1, 0], c, atol=1e-6)
    assert torch.allclose(g[-1, -1], normalize(b + c - a), atol=1e-6)
