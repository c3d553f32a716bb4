"""The closed-form covariance eigensolver on the hard cases: equal, nearly equal and zero
eigenvalues, extreme magnitudes, awkward rotations, and random covariances like the
unprojection's, in float64 (the CPU's) and float32 (a GPU's)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.eigensolver import covariance_eigen
from pipeline.gaussians import rotations_from_quaternions
from tests.pipeline.test_gaussians import _awkward_quaternions

TOLERANCE = {torch.float64: 1e-13, torch.float32: 1e-6}
"""Largest error allowed, relative to each matrix's norm: the rebuilt matrix's, an
eigenvalue's, and the eigenvectors' departure from orthonormal."""

ENTRIES = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))

FAMILIES = {  # eigenvalues, in no particular order
    "isotropic": (1.0, 1.0, 1.0),
    "two equal, larger": (1.0, 0.3, 1.0),
    "two equal, smaller": (0.3, 1.0, 0.3),
    "two 1e-7 apart": (1.0, 0.4, 1.0 + 1e-7),
    "three 1e-7 apart": (1.0 + 2e-7, 1.0, 1.0 + 1e-7),
    "two 1e-7 apart and zero": (0.0, 1.0 - 1e-7, 1.0),
    "flat": (1.0, 0.0, 0.5),
    "needle": (0.0, 0.0, 1.0),
    "zero": (0.0, 0.0, 0.0),
    "1e12 apart": (1e-12, 1.0, 0.5),
}


def _matrices(values: torch.Tensor, quaternions: torch.Tensor) -> torch.Tensor:
    """float64 `R diag(values) R^T`."""
    rotations = rotations_from_quaternions(quaternions.double())
    return (rotations * values.double()[:, None, :]) @ rotations.mT


def _solve(matrices: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """`covariance_eigen` of float64 matrices given to it in `dtype`, with the checks that
    hold for every answer: shapes, dtype, descending order, orthonormal vectors, and the
    matrices rebuilt from it. Returns the eigenvalues and the vectors, in float64."""
    rows = torch.stack([matrices[:, i, j] for i, j in ENTRIES]).to(dtype)
    values, vectors = covariance_eigen(rows)
    n = matrices.shape[0]
    assert values.shape == (3, n) and vectors.shape == (6, n)
    assert values.dtype == vectors.dtype == dtype
    assert bool((values[:-1] >= values[1:]).all())
    tolerance = TOLERANCE[dtype]
    largest, middle = vectors.double().view(2, 3, -1)
    for a, b, expected in ((largest, largest, 1), (middle, middle, 1), (largest, middle, 0)):
        assert float(((a * b).sum(0) - expected).abs().max()) < tolerance
    basis = torch.stack([largest, middle, torch.linalg.cross(largest, middle, dim=0)], 1)
    basis = basis.permute(2, 0, 1)
    rebuilt = (basis * values.double().T[:, None, :]) @ basis.mT
    norms = matrices.norm(dim=(-2, -1))
    error = (rebuilt - matrices).norm(dim=(-2, -1)) / norms.clamp(min=1e-300)
    assert float(error.max()) < tolerance
    return values.double(), vectors.double()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("magnitude", [1e-30, 1e-12, 1.0, 1e8, 1e30])
@pytest.mark.parametrize("family", FAMILIES)
def test_hard_cases_come_apart_and_back(family: str, magnitude: float,
                                        dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(11)
    quaternions = _awkward_quaternions(600, g)
    true = torch.tensor(FAMILIES[family], dtype=torch.float64).expand(600, 3) * magnitude
    matrices = _matrices(true, quaternions)
    values, _ = _solve(matrices, dtype)
    expected = true.sort(dim=1, descending=True).values.T
    norms = matrices.norm(dim=(-2, -1))
    assert float(((values - expected).abs() / norms.clamp(min=1e-300)).max()) \
        < TOLERANCE[dtype]
    if family == "zero":
        assert bool((values == 0).all())


def test_eigenvectors_are_the_matrix_s_own() -> None:
    """Distinct eigenvalues fix the eigenvectors up to sign: they match the rotation's
    columns they were built from."""
    g = torch.Generator().manual_seed(12)
    quaternions = _awkward_quaternions(1000, g)
    values = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64).expand(1000, 3)
    _, vectors = _solve(_matrices(values, quaternions), torch.float64)
    rotations = rotations_from_quaternions(quaternions)
    for column, found in ((0, vectors[:3]), (1, vectors[3:])):
        alignment = (rotations[:, :, column].T * found).sum(0).abs()
        assert float((alignment - 1).abs().max()) < 1e-14


@settings(max_examples=150, derandomize=True, deadline=None, database=None)
@given(gaussians=st.lists(st.tuples(st.tuples(*[st.floats(-6.0, 1.0)] * 3),
                                    st.tuples(*[st.floats(-1.0, 1.0)] * 4)),
                          min_size=1, max_size=12),
       aspect=st.tuples(st.floats(0.05, 20.0), st.floats(0.05, 20.0)),
       dtype=st.sampled_from([torch.float64, torch.float32]))
def test_random_metric_covariances(gaussians: list[tuple[tuple[float, ...], tuple[float, ...]]],
                                   aspect: tuple[float, float], dtype: torch.dtype) -> None:
    """Covariances as the unprojection makes them, `D R S^2 R^T D`, with scales from
    1e-6 to 10 m and `D` the intrinsics' `diag(W / 2f, H / 2f, 1)`."""
    log_scales = torch.tensor([s for s, _ in gaussians], dtype=torch.float64)
    quaternions = torch.tensor([q for _, q in gaussians], dtype=torch.float64)
    quaternions[quaternions.norm(dim=1) < 1e-3] = torch.tensor([1.0, 0.0, 0.0, 0.0],
                                                              dtype=torch.float64)
    d = torch.diag(torch.tensor([*aspect, 1.0], dtype=torch.float64))
    matrices = d @ _matrices(torch.pow(10.0, 2 * log_scales), quaternions) @ d
    _solve(matrices, dtype)


def test_a_batch_of_none_and_a_non_finite_matrix() -> None:
    """No matrices give empty answers; a non-finite one gives non-finite answers in its own
    column only."""
    values, vectors = covariance_eigen(torch.empty(6, 0, dtype=torch.float64))
    assert values.shape == (3, 0) and vectors.shape == (6, 0)
    g = torch.Generator().manual_seed(13)
    matrices = _matrices(torch.rand(6, 3, generator=g, dtype=torch.float64),
                         _awkward_quaternions(6, g))
    rows = torch.stack([matrices[:, i, j] for i, j in ENTRIES])
    clean_values, clean_vectors = covariance_eigen(rows)
    for bad in (float("nan"), float("inf")):
        broken = rows.clone()
        broken[3, 2] = bad
        values, vectors = covariance_eigen(broken)
        assert not bool(torch.isfinite(values[:, 2]).all())
        keep = [0, 1, 3, 4, 5]
        assert torch.allclose(values[:, keep], clean_values[:, keep], rtol=0, atol=1e-15)
        assert torch.allclose(vectors[:, keep], clean_vectors[:, keep], rtol=0, atol=1e-15)
