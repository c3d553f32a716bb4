"""Gaussians as plain tensors, and their move from SHARP's NDC space to metres.

`Gaussians` has the fields of SHARP's `Gaussians3D`, so either can be passed around
and written. The unprojection is SHARP's (`unproject_gaussians` with its intrinsics),
worked out once: for a centred principal point it is the diagonal map
`diag(W / 2f, H / 2f, 1)`, applied to means and covariances, with the covariances then
split again into rotation and scales on the tensors' own device, by the closed-form
eigensolver of `pipeline.eigensolver` (torch's batched `eigh` solves the matrices one
after another), a cache-sized chunk of Gaussians at a time.

The per-Gaussian algebra runs on "rows": `(k, n)` tensors holding one quantity of all
`n` Gaussians per row, written in place where it can be. Elementwise work on whole
contiguous rows costs a fraction of the same work on `(n, 3, 3)` or `(n, 4)` tensors,
whose tiny trailing dimensions defeat vectorisation, and of the float64 temporaries
that stacking them takes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .eigensolver import covariance_eigen

CPU_CHUNK = 10_240
"""Gaussians per pass on a CPU (see `chunk_size`). No step works on more than three rows
of them at once: 30,720 values, under the 32,768 from which torch spreads an operation
over its threads, which for work this small costs more than it gains (and on a machine
with busy cores, many times more)."""


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


# Row blocks of a quaternion's four rows, so that no operation spans more than three rows
# (see `CPU_CHUNK`).
_UP_TO_THREE = (slice(0, 3), slice(3, 4))


def _rotation_rows(q: torch.Tensor) -> torch.Tensor:
    """Row-major rotation entries `(9, n)` from wxyz quaternion rows `(4, n)`, any norm."""
    w, x, y, z = q.unbind()
    scale = torch.mul(w, w).addcmul_(x, x).addcmul_(y, y).addcmul_(z, z).mul_(0.5).rsqrt_()
    v = q[1:] * scale  # so that products carry 2 / |q|^2
    squares, turns = v * v, v * w.mul(scale)  # xx, yy, zz and wx, wy, wz
    r = torch.empty(9, q.shape[1], dtype=q.dtype, device=q.device)
    torch.sub(squares, squares.sum(0), out=r[0::4]).add_(1)  # 1 - yy - zz, ...
    x, y, z = v
    wx, wy, wz = turns
    for minus, plus, a, b, turn in ((1, 3, x, y, wz), (6, 2, x, z, wy), (5, 7, y, z, wx)):
        torch.mul(a, b, out=r[minus])  # r01 = xy - wz, r10 = xy + wz, ...
        torch.add(r[minus], turn, out=r[plus])
        r[minus].sub_(turn)
    return r


def _quaternion_rows(m00: torch.Tensor, m10: torch.Tensor, m20: torch.Tensor,
                     m01: torch.Tensor, m11: torch.Tensor, m21: torch.Tensor,
                     m02: torch.Tensor, m12: torch.Tensor, m22: torch.Tensor) -> torch.Tensor:
    """wxyz quaternion rows `(4, n)`, w >= 0, from the rotation entries' rows `(n,)`.

    Of the four unnormalised candidates, the rows of the symmetric matrix
    `k = [[t0, a, b, c], [a, t1, d, e], [b, d, t2, f], [c, e, f, t3]]`, takes the one with
    the largest leading term: at least 1 for a rotation, as the four sum to 4.
    """
    n = m00.shape[0]
    k = torch.empty(16, n, dtype=m00.dtype, device=m00.device)
    rows = k.view(4, 4, n)
    t0, t1, t2, t3 = k[0::5].unbind()
    torch.add(m00, m11, out=t0).add_(m22)
    low = torch.neg(t0).add_(1)  # 1 - trace; t_i = 1 - trace + 2 m_ii
    t0.add_(1)
    torch.add(low, m00, alpha=2, out=t1)
    torch.add(low, m11, alpha=2, out=t2)
    torch.add(low, m22, alpha=2, out=t3)
    torch.sub(m21, m12, out=k[1])
    torch.sub(m02, m20, out=k[2])
    torch.sub(m10, m01, out=k[3])
    torch.add(m01, m10, out=k[6])
    torch.add(m02, m20, out=k[7])
    torch.add(m12, m21, out=k[11])
    k[4::4].copy_(k[1:4])  # the lower triangle
    k[9::4].copy_(k[6:8])
    k[14].copy_(k[11])
    # The best row, in two rounds of pairs: lerp with a weight of 0 or 1 picks exactly.
    picks = torch.empty(3, n, dtype=k.dtype, device=k.device)
    torch.gt(t1, t0, out=picks[0])
    torch.gt(t3, t2, out=picks[1])
    torch.gt(torch.maximum(t2, t3), torch.maximum(t0, t1), out=picks[2])
    q = rows[0]
    for part in _UP_TO_THREE:
        torch.lerp(q[part], rows[1, part], picks[0], out=q[part])
        torch.lerp(rows[2, part], rows[3, part], picks[1], out=rows[2, part])
        torch.lerp(q[part], rows[2, part], picks[2], out=q[part])
    scale = torch.mul(q[0], q[0]).addcmul_(q[1], q[1]).addcmul_(q[2], q[2]).addcmul_(q[3], q[3])
    scale.rsqrt_().copysign_(q[0])
    for part in _UP_TO_THREE:
        q[part].mul_(scale)
    return q


def rotations_from_quaternions(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from wxyz quaternions (normalised first)."""
    return _unrows(_rotation_rows(_rows(q, q.dtype)), q.shape[:-1], q.dtype).unflatten(-1, (3, 3))


def quaternions_from_rotations(m: torch.Tensor) -> torch.Tensor:
    """wxyz quaternions (w >= 0) from rotation matrices, taking the best-conditioned branch."""
    columns = _rows(m.mT.flatten(-2), m.dtype)
    return _unrows(_quaternion_rows(*columns), m.shape[:-2], m.dtype)


# `a00, a11, a22, a01, a02, a12`: the covariance rows `covariance_eigen` takes.
_COVARIANCE_ENTRIES = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


def _metric_covariances(q: torch.Tensor, s: torch.Tensor, dd: torch.Tensor) -> torch.Tensor:
    """`(6, n)` rows of the covariances `D R S^2 R^T D` from quaternion and scale rows;
    `dd` `(6, 1)` holds `D`'s products `d_i d_j` for the six entries."""
    m = _rotation_rows(q).view(3, 3, -1)
    for row in m:
        row.mul_(s)  # R S
    cov = torch.empty(6, q.shape[1], dtype=q.dtype, device=q.device)
    (m0, m1, m2), columns = m, m.unbind(1)  # rows and columns of R S
    torch.mul(columns[0], columns[0], out=cov[0:3])
    torch.mul(m1[0], m2[0], out=cov[5])
    torch.mul(m[1:, 0], m0[0], out=cov[3:5])
    for k in (1, 2):
        cov[0:3].addcmul_(columns[k], columns[k])
        cov[5].addcmul_(m1[k], m2[k])
        cov[3:5].addcmul_(m[1:, k], m0[k])
    cov[0:3].mul_(dd[0:3])
    cov[3:6].mul_(dd[3:6])
    return cov


def _solver_dtype(device: torch.device) -> torch.dtype:
    """float64 on a CPU, where it costs little; float32 on an accelerator, where consumer
    GPUs are slow at float64's divisions and roots. Both rebuild the covariances within
    1e-6 of their norm (float64: 1e-15; float32: 8e-7 at worst in our tests)."""
    return torch.float64 if device.type == "cpu" else torch.float32


def chunk_size(device: torch.device) -> int:
    """Gaussians unprojected at once: on a CPU few enough that no step is split over
    threads (`CPU_CHUNK`); on an accelerator enough to keep it busy, with the scratch
    memory (under 1 KB a Gaussian) bounded."""
    return CPU_CHUNK if device.type == "cpu" else 1 << 18


def _unproject_rows(q: torch.Tensor, s: torch.Tensor, dd: torch.Tensor,
                    solver: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Metric quaternion and scale rows from NDC float64 quaternion and scale rows.

    The covariances are built in float64 (in float32 the rotation's rounding, scaled by
    the anisotropic `D`, costs 1.4e-6 of their norm) and split in `solver`'s dtype.
    """
    eigenvalues, vectors = covariance_eigen(_metric_covariances(q, s, dd).to(solver))
    # The rotation's columns: the largest eigenvector, the middle one and, to make it
    # proper, their cross product.
    largest, middle = vectors.view(2, 3, -1)
    third = torch.empty_like(largest)
    for i, (j, k) in enumerate(((1, 2), (2, 0), (0, 1))):
        torch.mul(largest[j], middle[k], out=third[i]).addcmul_(largest[k], middle[j], value=-1)
    # Scales: sqrt(x) as x / sqrt(x), since torch threads `sqrt` from 2,048 values on.
    floor = eigenvalues.clamp_(min=0).clamp(min=torch.finfo(solver).tiny)
    return _quaternion_rows(*largest, *middle, *third), eigenvalues.mul_(floor.rsqrt_())


def unproject(gaussians: Gaussians, f_px: float, width: int, height: int) -> Gaussians:
    """NDC Gaussians to metric camera space for a `width` x `height` photo at `f_px`."""
    device = gaussians.mean_vectors.device
    diag = torch.tensor([width / (2.0 * f_px), height / (2.0 * f_px), 1.0],
                        device=device, dtype=torch.float64)
    first, second = zip(*_COVARIANCE_ENTRIES, strict=True)
    dd = (diag[list(first)] * diag[list(second)])[:, None]
    means_in = gaussians.mean_vectors.reshape(-1, 3)
    q_in = gaussians.quaternions.reshape(-1, 4)
    s_in = gaussians.singular_values.reshape(-1, 3)
    means, q_out, s_out = (torch.empty_like(t) for t in (means_in, q_in, s_in))
    step, solver = chunk_size(device), _solver_dtype(device)
    span = min(step, q_in.shape[0])  # a chunk's scratch: NDC rows and metric means
    q, s = (torch.empty(k, span, dtype=torch.float64, device=device) for k in (4, 3))
    m = torch.empty(span, 3, dtype=torch.float64, device=device)
    for start in range(0, q_in.shape[0], step):
        part = slice(start, start + step)
        n = q_in[part].shape[0]
        for rows in _UP_TO_THREE:
            q[rows, :n].copy_(q_in[part, rows].T)
        s[:, :n].copy_(s_in[part].T)
        means[part] = torch.mul(means_in[part], diag, out=m[:n])
        q_metric, s_metric = _unproject_rows(q[:, :n], s[:, :n], dd, solver)
        for rows in _UP_TO_THREE:
            q_out[part, rows] = q_metric[rows].T
        s_out[part] = s_metric.T
    shape = gaussians.quaternions.shape[:-1]
    return Gaussians(
        mean_vectors=means.view(gaussians.mean_vectors.shape),
        singular_values=s_out.view(*shape, 3),
        quaternions=q_out.view(*shape, 4),
        colors=gaussians.colors,
        opacities=gaussians.opacities,
    )


def covariances(gaussians: Gaussians) -> torch.Tensor:
    """Full 3x3 covariances; what two equivalent (rotation, scale) splits agree on."""
    rotations = rotations_from_quaternions(gaussians.quaternions.double())
    scaled = rotations * gaussians.singular_values.double()[..., None, :]
    return scaled @ scaled.transpose(-1, -2)
