"""Unprojection from SHARP's NDC space to metres, and the rotation/quaternion round trip."""

from __future__ import annotations

import pytest
import torch

import pipeline.gaussians as gaussians_module
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


def _hamilton(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Quaternion product a * b of wxyz quaternions."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], dim=-1)


def _awkward_quaternions(n: int, g: torch.Generator) -> torch.Tensor:
    """Random unit quaternions, a third of them 180-degree turns or within 1e-9 of one."""
    q = torch.nn.functional.normalize(torch.randn(n, 4, generator=g, dtype=torch.float64),
                                      dim=-1)
    third = n // 3
    q[:third, 0] = 0.0
    q[third:2 * third, 0] = 1e-9 * torch.randn(third, generator=g, dtype=torch.float64)
    q[:6] = torch.tensor([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0],
                          [0, 1, 1, 0], [-1, 0, 0, 0]], dtype=torch.float64)
    return torch.nn.functional.normalize(q, dim=-1)


def _degenerate(n: int = 3000) -> Gaussians:
    """float64 Gaussians with equal, near-equal and almost-zero scales and awkward turns."""
    g = torch.Generator().manual_seed(7)
    scales = torch.exp(2 * torch.randn(n, 3, generator=g, dtype=torch.float64))
    part = n // 6
    scales[:part] = scales[:part, :1]                                  # a sphere
    scales[part:2 * part, 1] = scales[part:2 * part, 0]                # two equal
    scales[2 * part:3 * part, 1:] = scales[2 * part:3 * part, :1] * (1 + 1e-12)
    scales[3 * part:4 * part, 2] = 1e-9                                # a flat disc
    scales[4 * part:5 * part, 1:] = 1e-9                               # a needle
    q = _awkward_quaternions(n, g)[torch.randperm(n, generator=g)]
    q = q * (0.5 + torch.rand(n, 1, generator=g, dtype=torch.float64))  # any norm
    return Gaussians(
        mean_vectors=torch.randn(1, n, 3, generator=g, dtype=torch.float64),
        singular_values=scales[None],
        quaternions=q[None],
        colors=torch.rand(1, n, 3, generator=g, dtype=torch.float64),
        opacities=torch.rand(1, n, generator=g, dtype=torch.float64),
    )


def test_rotations_turn_vectors_as_the_quaternion_sandwich_does() -> None:
    g = torch.Generator().manual_seed(3)
    q = _awkward_quaternions(3000, g) * 2.5
    v = torch.randn(3000, 3, generator=g, dtype=torch.float64)
    unit = q / q.norm(dim=-1, keepdim=True)
    conjugate = unit * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=torch.float64)
    pure = torch.cat([torch.zeros(3000, 1, dtype=torch.float64), v], dim=-1)
    expected = _hamilton(_hamilton(unit, pure), conjugate)[:, 1:]
    turned = (rotations_from_quaternions(q) @ v[:, :, None])[..., 0]
    assert float((turned - expected).abs().max()) < 1e-12
    quarter = torch.tensor([[0.5 ** 0.5, 0, 0, 0.5 ** 0.5]], dtype=torch.float64)
    assert torch.allclose(rotations_from_quaternions(quarter)[0],
                          torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]],
                                       dtype=torch.float64), atol=1e-15)


def test_quaternions_from_half_turns_and_near_half_turns_are_exact_and_unit() -> None:
    q = _awkward_quaternions(3000, torch.Generator().manual_seed(4))
    back = quaternions_from_rotations(rotations_from_quaternions(q))
    aligned = torch.where((q * back).sum(-1, keepdim=True) < 0, -q, q)  # q and -q: one turn
    assert float((back - aligned).abs().max()) < 1e-12
    assert bool((back[:, 0] >= 0).all())
    assert float((back.norm(dim=-1) - 1).abs().max()) < 1e-14
    assert back.shape == (3000, 4) and back.is_contiguous()


def test_unprojection_keeps_metric_covariances_of_degenerate_gaussians() -> None:
    g = _degenerate()
    f_px, width, height = 3100.5, 4032, 3024
    metric = unproject(g, f_px, width, height)
    d = torch.diag(torch.tensor([width / (2 * f_px), height / (2 * f_px), 1.0],
                                dtype=torch.float64))
    expected = d @ covariances(g) @ d
    error = (covariances(metric) - expected).norm(dim=(-2, -1))
    assert float((error / expected.norm(dim=(-2, -1))).max()) < 1e-9
    q, s = metric.quaternions, metric.singular_values
    assert float((q.norm(dim=-1) - 1).abs().max()) < 1e-14
    assert bool((q[..., 0] >= 0).all())
    assert bool((s[..., :-1] >= s[..., 1:]).all()) and bool((s >= 0).all())
    assert torch.allclose(s.square().sum(-1), torch.diagonal(expected, dim1=-2, dim2=-1)
                          .sum(-1), rtol=1e-12)
    for field in metric:
        assert field.dtype == torch.float64 and field.is_contiguous()
    assert q.shape == g.quaternions.shape and s.shape == g.singular_values.shape


def _metric(g: Gaussians, f_px: float = 3100.5, size: tuple[int, int] = (4032, 3024)
            ) -> tuple[Gaussians, torch.Tensor]:
    """`g` unprojected, and the metric covariances it should have (float64)."""
    d = torch.diag(torch.tensor([size[0] / (2 * f_px), size[1] / (2 * f_px), 1.0],
                                dtype=torch.float64))
    return unproject(g, f_px, *size), d @ covariances(g) @ d


def _covariance_error(metric: Gaussians, expected: torch.Tensor) -> float:
    """Largest error of `metric`'s covariances, relative to each one's norm."""
    error = (covariances(metric) - expected).norm(dim=(-2, -1))
    return float((error / expected.norm(dim=(-2, -1))).max())


def test_unprojection_needs_no_batched_eigensolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's batched `eigh` solves one small matrix after another, on one thread."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a batched torch eigensolver was called")

    for name in ("eigh", "eigvalsh", "eig", "svd"):
        monkeypatch.setattr(torch.linalg, name, refuse)
    metric, expected = _metric(_degenerate(600))
    assert _covariance_error(metric, expected) < 1e-13


def test_unprojection_on_an_accelerator_keeps_float32_covariances_within_1e_6(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU splits the covariances in float32 (`_solver_dtype`): SHARP's float32
    Gaussians come back within 1e-6 of their float64 metric covariances, as proper
    rotations and descending, non-negative scales."""
    monkeypatch.setattr(gaussians_module, "_solver_dtype", lambda device: torch.float32)
    g = Gaussians(*(t.float() for t in _degenerate(6000)))
    metric, expected = _metric(g)
    assert _covariance_error(metric, expected) < 1e-6
    q, s = metric.quaternions, metric.singular_values
    assert q.dtype == s.dtype == torch.float32
    assert bool((s[..., :-1] >= s[..., 1:]).all()) and bool((s >= 0).all())
    assert bool((q[..., 0] >= 0).all())
    rotations = rotations_from_quaternions(q.double())
    assert float((torch.linalg.det(rotations) - 1).abs().max()) < 1e-6
    assert float((rotations.mT @ rotations - torch.eye(3, dtype=torch.float64)).abs().max()) \
        < 1e-6


def test_unprojection_on_an_accelerator_keeps_to_its_device() -> None:
    """The accelerator path (float32 solver, large chunks, the last one short) run on
    torch's data-less "meta" device: any tensor made on the CPU by mistake, as a GPU
    would refuse it, fails here."""
    n = (1 << 18) + 5
    shapes = ((1, n, 3), (1, n, 3), (1, n, 4), (1, n, 3), (1, n))
    g = Gaussians(*(torch.empty(shape, device="meta") for shape in shapes))
    metric = unproject(g, 3100.5, 4032, 3024)
    for field, shape in zip(metric, shapes, strict=True):
        assert field.device.type == "meta" and field.shape == shape
        assert field.dtype == torch.float32


def test_unprojection_in_chunks_matches_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts that are not a multiple of the chunk: every Gaussian lands in its own place."""
    g = _random(2503)
    whole = unproject(g, 1500.0, 4000, 3000)
    monkeypatch.setattr(gaussians_module, "CPU_CHUNK", 1000)
    chunked = unproject(g, 1500.0, 4000, 3000)
    for a, b in zip(whole, chunked, strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=1e-6)
    metric, expected = _metric(g, 1500.0, (4000, 3000))
    assert _covariance_error(chunked, expected) < 1e-6
    assert torch.equal(metric.mean_vectors, chunked.mean_vectors)


def test_a_non_finite_gaussian_spoils_only_itself() -> None:
    """SHARP output with a NaN or an infinity (the PLY writers make such Gaussians
    transparent) leaves its neighbours' numbers as they were."""
    g = _random(50)
    clean = unproject(g, 1500.0, 4000, 3000)
    for bad in (float("nan"), float("inf")):
        quaternions = g.quaternions.clone()
        quaternions[0, 7, 2] = bad
        spoilt = unproject(g._replace(quaternions=quaternions), 1500.0, 4000, 3000)
        assert not bool(torch.isfinite(spoilt.singular_values[0, 7]).all())
        keep = torch.arange(50) != 7
        for a, b in ((clean.quaternions, spoilt.quaternions),
                     (clean.singular_values, spoilt.singular_values)):
            assert torch.allclose(a[0, keep], b[0, keep], rtol=0, atol=1e-7)
