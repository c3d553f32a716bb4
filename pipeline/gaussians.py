"""Gaussians as plain tensors, and their move from SHARP's NDC space to metres.

`Gaussians` has the fields of SHARP's `Gaussians3D`, so either can be passed around
and written. The unprojection is SHARP's (`unproject_gaussians` with its intrinsics),
worked out once: for a centred principal point it is the diagonal map
`diag(W / 2f, H / 2f, 1)`, applied to means and covariances, with the covariances then
split again into rotation and scales (in float64, on the tensors' own device).
On the CPU the eigensolver, which torch runs on one thread for a batch of small
matrices, is given one slice of the batch per thread.

The per-Gaussian algebra runs on "rows": `(k, n)` tensors holding one quantity of all
`n` Gaussians per row, written in place where it can be. Elementwise work on whole
contiguous rows costs a fraction of the same work on `(n, 3, 3)` or `(n, 4)` tensors,
whose tiny trailing dimensions defeat vectorisation, and of the float64 temporaries
that stacking them takes; only the eigensolver, which dominates, gets matrices.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import torch

MIN_EIGH_SLICE = 32_768
"""Fewer matrices than this per thread are not worth a thread (about 30 ms of work)."""


class Gaussians(NamedTuple):
    """`(1, N, k)` tensors: means, scales, wxyz quaternions, linear RGB, opacities `(1, N)`."""

    mean_vectors: torch.Tensor
    singular_values: torch.Tensor
    quaternions: torch.Tensor
    colors: torch.Tensor
    opacities: torch.Tensor


def _rows(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`(..., k)` to contiguous `(k, n)` rows of `dtype`, in one copy."""
    k = t.shape[-1]
    rows = torch.empty(k, t.numel() // k, dtype=dtype, device=t.device)
    return rows.copy_(t.reshape(rows.shape[1], k).T)


def _unrows(rows: torch.Tensor, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """`(k, n)` rows back to a contiguous `(*shape, k)` tensor of `dtype`, in one copy."""
    out = torch.empty(*shape, rows.shape[0], dtype=dtype, device=rows.device)
    out.view(rows.shape[1], rows.shape[0]).copy_(rows.T)
    return out


def _rotation_rows(q: torch.Tensor) -> torch.Tensor:
    """Row-major rotation entries `(9, n)` from wxyz quaternion rows `(4, n)`, any norm."""
    w, x, y, z = q * (2 / (q * q).sum(0)).sqrt_()  # so that products carry 2 / |q|^2
    xx, yy, zz = x * x, y * y, z * z
    wx, wy, wz, xy, xz, yz = w * x, w * y, w * z, x * y, x * z, y * z
    r = torch.empty(9, q.shape[1], dtype=q.dtype, device=q.device)
    torch.add(yy, zz, out=r[0]).neg_().add_(1)
    torch.sub(xy, wz, out=r[1])
    torch.add(xz, wy, out=r[2])
    torch.add(xy, wz, out=r[3])
    torch.add(xx, zz, out=r[4]).neg_().add_(1)
    torch.sub(yz, wx, out=r[5])
    torch.sub(xz, wy, out=r[6])
    torch.add(yz, wx, out=r[7])
    torch.add(xx, yy, out=r[8]).neg_().add_(1)
    return r


# Where each entry of the symmetric 4x4 candidate matrix sits among `_quaternion_rows`'s
# ten distinct values (t0, t1, t2, t3, a, b, c, d, e, f).
_CANDIDATE_SLOTS = ((0, 4, 5, 6), (4, 1, 7, 8), (5, 7, 2, 9), (6, 8, 9, 3))


def _quaternion_rows(m00: torch.Tensor, m10: torch.Tensor, m20: torch.Tensor,
                     m01: torch.Tensor, m11: torch.Tensor, m21: torch.Tensor,
                     m02: torch.Tensor, m12: torch.Tensor, m22: torch.Tensor) -> torch.Tensor:
    """wxyz quaternion rows `(4, n)`, w >= 0, from the rotation entries' rows `(n,)`.

    Of the four unnormalised candidates, the rows of the symmetric matrix
    `[[t0, a, b, c], [a, t1, d, e], [b, d, t2, f], [c, e, f, t3]]`, takes the one with the
    largest leading term: at least 1 for a rotation, as the four sum to 4.
    """
    values = torch.empty(10, m00.shape[0], dtype=m00.dtype, device=m00.device)
    t0, t1, t2, t3, a, b, c, d, e, f = values
    torch.add(m11, m22, out=t0).add_(m00).add_(1)
    torch.sub(m00, m11, out=t1).sub_(m22).add_(1)
    torch.sub(m11, m00, out=t2).sub_(m22).add_(1)
    torch.sub(m22, m00, out=t3).sub_(m11).add_(1)
    torch.sub(m21, m12, out=a)
    torch.sub(m02, m20, out=b)
    torch.sub(m10, m01, out=c)
    torch.add(m01, m10, out=d)
    torch.add(m02, m20, out=e)
    torch.add(m12, m21, out=f)
    best = values[:4].max(dim=0).indices
    slots = torch.tensor(_CANDIDATE_SLOTS, device=m00.device).index_select(1, best)
    q = values.gather(0, slots)
    scale = (q * q).sum(0).rsqrt_()
    return q.mul_(torch.where(q[0] < 0, -scale, scale))


def rotations_from_quaternions(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from wxyz quaternions (normalised first)."""
    return _unrows(_rotation_rows(_rows(q, q.dtype)), q.shape[:-1], q.dtype).unflatten(-1, (3, 3))


def quaternions_from_rotations(m: torch.Tensor) -> torch.Tensor:
    """wxyz quaternions (w >= 0) from rotation matrices, taking the best-conditioned branch."""
    columns = _rows(m.mT.flatten(-2), m.dtype)
    return _unrows(_quaternion_rows(*columns), m.shape[:-2], m.dtype)


def _metric_covariances(q: torch.Tensor, s: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
    """`(n, 3, 3)` covariances `D R S^2 R^T D`, exactly symmetric, from q and scale rows."""
    m = _rotation_rows(q).view(3, 3, -1).mul_(s).mul_(diag[:, None, None])  # D R S
    cov = torch.empty_like(m)
    for i in range(3):
        for j in range(i + 1):
            mi, mj = m[i], m[j]
            torch.mul(mi[0], mj[0], out=cov[i, j]).addcmul_(mi[1], mj[1]).addcmul_(mi[2], mj[2])
            cov[j, i] = cov[i, j]
    return cov.permute(2, 0, 1)


def eigh(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.linalg.eigh` of a `(n, 3, 3)` batch, spread over torch's CPU threads.

    torch's CPU kernel solves a batch one matrix after another on one thread; each
    matrix is solved alone either way, so the slices' results are the same numbers.
    """
    slices = min(torch.get_num_threads(), matrices.shape[0] // MIN_EIGH_SLICE)
    if matrices.device.type != "cpu" or slices < 2:
        return torch.linalg.eigh(matrices)
    with ThreadPoolExecutor(slices, thread_name_prefix="eigh") as pool:
        parts = list(pool.map(torch.linalg.eigh, matrices.chunk(slices)))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def unproject(gaussians: Gaussians, f_px: float, width: int, height: int) -> Gaussians:
    """NDC Gaussians to metric camera space for a `width` x `height` photo at `f_px`."""
    device = gaussians.mean_vectors.device
    dtype = gaussians.mean_vectors.dtype
    diag = torch.tensor([width / (2.0 * f_px), height / (2.0 * f_px), 1.0],
                        device=device, dtype=torch.float64)
    means = (gaussians.mean_vectors.double() * diag).to(dtype)
    shape = gaussians.quaternions.shape[:-1]

    covariance = _metric_covariances(_rows(gaussians.quaternions, torch.float64),
                                     _rows(gaussians.singular_values, torch.float64), diag)
    eigenvalues, eigenvectors = eigh(covariance)
    # Rows: the middle and the largest eigenvector. The rotation's columns are the
    # largest, the middle and, to make it proper, their cross product.
    ascending = eigenvectors.mT.reshape(covariance.shape[0], 9)
    middle, largest = ascending[:, 3:].T.contiguous().view(2, 3, -1)
    third = torch.linalg.cross(largest, middle, dim=0)
    return Gaussians(
        mean_vectors=means,
        singular_values=eigenvalues.flip(-1).clamp_(min=0).sqrt_().to(dtype).view(*shape, 3),
        quaternions=_unrows(_quaternion_rows(*largest, *middle, *third), shape, dtype),
        colors=gaussians.colors,
        opacities=gaussians.opacities,
    )


def covariances(gaussians: Gaussians) -> torch.Tensor:
    """Full 3x3 covariances; what two equivalent (rotation, scale) splits agree on."""
    rotations = rotations_from_quaternions(gaussians.quaternions.double())
    scaled = rotations * gaussians.singular_values.double()[..., None, :]
    return scaled @ scaled.transpose(-1, -2)
