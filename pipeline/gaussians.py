"""Gaussians as plain tensors, and their move from SHARP's NDC space to metres.

`Gaussians` has the fields of SHARP's `Gaussians3D`, so either can be passed around
and written. The unprojection is SHARP's (`unproject_gaussians` with its intrinsics),
worked out once: for a centred principal point it is the diagonal map
`diag(W / 2f, H / 2f, 1)`, applied to means and covariances, with the covariances then
split again into rotation and scales (in float64, on the tensors' own device).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Gaussians(NamedTuple):
    """`(1, N, k)` tensors: means, scales, wxyz quaternions, linear RGB, opacities `(1, N)`."""

    mean_vectors: torch.Tensor
    singular_values: torch.Tensor
    quaternions: torch.Tensor
    colors: torch.Tensor
    opacities: torch.Tensor


def rotations_from_quaternions(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from wxyz quaternions (normalised first)."""
    q = q / torch.linalg.norm(q, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def quaternions_from_rotations(m: torch.Tensor) -> torch.Tensor:
    """wxyz quaternions (w >= 0) from rotation matrices, taking the best-conditioned branch."""
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    candidates = torch.stack([
        torch.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
        torch.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
        torch.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
        torch.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
    ], dim=-2)
    diagonal = torch.diagonal(candidates, dim1=-2, dim2=-1)
    best = diagonal.argmax(dim=-1, keepdim=True)
    q = torch.gather(candidates, -2, best[..., None].expand(*best.shape, 4)).squeeze(-2)
    q = q / torch.linalg.norm(q, dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def unproject(gaussians: Gaussians, f_px: float, width: int, height: int) -> Gaussians:
    """NDC Gaussians to metric camera space for a `width` x `height` photo at `f_px`."""
    device = gaussians.mean_vectors.device
    dtype = gaussians.mean_vectors.dtype
    diag = torch.tensor([width / (2.0 * f_px), height / (2.0 * f_px), 1.0],
                        device=device, dtype=torch.float64)
    means = (gaussians.mean_vectors.double() * diag).to(dtype)

    rotations = rotations_from_quaternions(gaussians.quaternions.double())
    scaled = diag[:, None] * rotations * gaussians.singular_values.double()[..., None, :]
    covariance = scaled @ scaled.transpose(-1, -2)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    eigenvalues, eigenvectors = eigenvalues.flip(-1), eigenvectors.flip(-1)
    flip = torch.linalg.det(eigenvectors) < 0
    eigenvectors[..., :, 2] = torch.where(flip[..., None], -eigenvectors[..., :, 2],
                                          eigenvectors[..., :, 2])
    return Gaussians(
        mean_vectors=means,
        singular_values=eigenvalues.clamp(min=0).sqrt().to(dtype),
        quaternions=quaternions_from_rotations(eigenvectors).to(dtype),
        colors=gaussians.colors,
        opacities=gaussians.opacities,
    )


def covariances(gaussians: Gaussians) -> torch.Tensor:
    """Full 3x3 covariances; what two equivalent (rotation, scale) splits agree on."""
    rotations = rotations_from_quaternions(gaussians.quaternions.double())
    scaled = rotations * gaussians.singular_values.double()[..., None, :]
    return scaled @ scaled.transpose(-1, -2)
