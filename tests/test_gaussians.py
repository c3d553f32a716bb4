"""Unprojection from SHARP's NDC space to metres, and the rotation/quaternion round trip."""

from __future__ import annotations

import torch

from pipeline.gaussians import (
    Gaussians,
    covariances,
    quaternions_from_rotations,
    rotations_from_quaternions,
    unproject,
)


def _random(n: int = 2000) -> Gaussians:
    g = torch.Generator().manual_seed(1)
    return Gaussians(
        mean_vectors=torch.randn(1, n, 3, generator=g),
        singular_values=torch.rand(1, n, 3, generator=g) + 0.01,
        quaternions=torch.nn.functional.normalize(torch.randn(1, n, 4, generator=g), dim=-1),
        colors=torch.rand(1, n, 3, generator=g),
        opacities=torch.rand(1, n, generator=g),
    )


def test_quaternion_round_trip_gives_the_same_rotation() -> None:
    q = _random().quaternions.double()
    rotations = rotations_from_quaternions(q)
    back = quaternions_from_rotations(rotations)
    assert torch.allclose(rotations_from_quaternions(back), rotations, atol=1e-10)
    assert bool((back[..., 0] >= 0).all())


def test_unprojection_scales_means_and_covariances_by_the_intrinsics() -> None:
    g = _random()
    f_px, width, height = 1500.0, 4000, 3000
    metric = unproject(g, f_px, width, height)
    diag = torch.tensor([width / (2 * f_px), height / (2 * f_px), 1.0], dtype=torch.float64)
    assert torch.allclose(metric.mean_vectors.double(), g.mean_vectors.double() * diag,
                          rtol=1e-6)
    expected = diag[:, None] * covariances(g) * diag[None, :]
    assert torch.allclose(covariances(metric), expected, rtol=1e-5, atol=1e-6)
    assert bool((metric.singular_values[..., 0] >= metric.singular_values[..., 2]).all())
    assert torch.equal(metric.colors, g.colors) and torch.equal(metric.opacities, g.opacities)
