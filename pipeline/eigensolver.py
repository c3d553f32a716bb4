"""Closed-form eigen-decomposition of 3x3 covariance matrices, vectorised over rows.

Built for `unproject`'s million covariances: about 130 elementwise operations on `(k, n)`
rows (one quantity of all `n` matrices a row), the same code on a CPU and a GPU, and
accurate in float32 as well as float64. torch's batched `linalg.eigh` solves one matrix
after another on one CPU thread, several times slower.

The method, for a positive semi-definite `A` (Smith 1961; Kopp 2008, "Efficient numerical
diagonalization of hermitian 3x3 matrices"), without a branch:
- `B = (A - tr(A) / 3) / (tr(A) p)`, scaled so that `|B|^2 = 6`, has eigenvalues
  `2 cos(phi + 2 pi k / 3)` with `cos(3 phi) = det(B) / 2`.
- The eigenvalue farthest from the other two (the largest where `det(B) >= 0`, else the
  smallest) is at least sqrt(3) away from both, so it and its eigenvector are well
  conditioned however close the other two are. The eigenvector is the best column of the
  adjugate of `B - lambda I` (the cross products of that matrix's rows).
- The other two are the eigenpairs of the 2x2 matrix `B` makes on an orthonormal basis of
  the plane perpendicular to it (Duff et al. 2017's basis, "Building an orthonormal basis,
  revisited"): a 2x2 symmetric problem solves stably for equal, nearly equal and zero
  eigenvalues alike, where the cubic's other two roots would lose half their digits.
Each step's error is a few rounding units of the matrix's norm: the rebuilt matrices
agree with `A` to about 1e-15 of its norm in float64, and within 1e-6 in float32.
"""

from __future__ import annotations

import torch

_BASIS_NUDGE = 2.0 ** -60
"""Added to the 2x2 eigenvector's first entry so that it has a length when both eigenvalues
are equal (any vector is one then): below float32's resolution of the unit-sized entries,
and its square is still a normal float32."""

_SQRT3 = 3.0 ** 0.5
_SCRATCH_ROWS = 32


def covariance_eigen(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues and the two leading eigenvectors of `n` covariance matrices.

    `rows` is `(6, n)`: `a00, a11, a22, a01, a02, a12` of symmetric positive semi-definite
    matrices (only a positive trace is relied on). Returns the eigenvalues `(3, n)` in
    descending order (a singular matrix's smallest may come out a rounding error below
    zero) and `(6, n)`: the unit eigenvectors of the largest and of the middle eigenvalue;
    their cross product completes a rotation. Computes in `rows`' dtype and device.

    Every step is one operation on at most three rows, so on a CPU `n` up to 10,922 keeps
    each below the 32,768 values from which torch spreads an operation over its threads
    (a cost, not a gain, at this size), and a chunk of that size within its caches.
    """
    n = rows.shape[1]
    dtype, device = rows.dtype, rows.device
    tiny = torch.finfo(dtype).tiny
    work = torch.empty(_SCRATCH_ROWS, n, dtype=dtype, device=device)
    b, diag, off = work[0:6], work[0:3], work[3:6]
    b00, b11, b22, b01, b02, b12 = b.unbind()
    t, third, p, r, x, top, sign, c0, c1, c2 = work[6:16].unbind()
    spare = work[16:19]

    # B = 3 (A - tr / 3) / tr / p, with p^2 = |3 (A - tr / 3) / tr|^2 / 6: dividing by the
    # trace first keeps float32's squares and cubes in range, and the diagonal, from
    # differences of A's, sums to zero as closely as it is known (else B's eigenvalues
    # need not be those of the cosines below).
    cycle = work[16:20]  # a22 - a00, a00 - a11, a11 - a22, a22 - a00
    torch.sub(rows[0], rows[1], out=cycle[1])
    torch.sub(rows[1], rows[2], out=cycle[2])
    torch.sub(rows[2], rows[0], out=cycle[3])
    cycle[0].copy_(cycle[3])
    torch.sub(cycle[1:4], cycle[0:3], out=diag)  # 3 a00 - tr, ...
    torch.sum(rows[:3], 0, out=t)
    torch.mul(t, 1 / 3, out=third)
    diag.mul_(torch.clamp(t, min=tiny, out=r).reciprocal_())
    torch.mul(rows[3:], r.mul_(3), out=off)
    torch.sum(torch.mul(diag, diag, out=spare), 0, out=p)
    p.add_(torch.sum(torch.mul(off, off, out=spare), 0, out=r), alpha=2).mul_(1 / 6)
    torch.clamp(p, min=tiny, out=r).rsqrt_()
    diag.mul_(r)
    off.mul_(r)
    p.mul_(r)  # sqrt(p^2), or below sqrt(tiny) where that was clamped

    # det(B) = 2 cos(3 phi). The outlier is the largest eigenvalue where det(B) >= 0, else
    # the smallest: B is turned (times `sign`) so that it is always the largest, x. x is
    # the root in [sqrt(3), 2] of x^3 - 3x - |det B|: two Newton steps from the chord and
    # one that keeps the last digit (acos and cos give it too, but torch spreads those
    # over its threads from 2,048 values on).
    torch.mul(b11, b22, out=c0).addcmul_(b12, b12, value=-1)
    torch.mul(b02, b12, out=c1).addcmul_(b01, b22, value=-1)
    torch.mul(b01, b12, out=c2).addcmul_(b11, b02, value=-1)
    torch.mul(b00, c0, out=r).addcmul_(b01, c1).addcmul_(b02, c2)
    torch.ge(r, 0, out=top)  # 1 where the outlier is the largest, else 0
    torch.mul(top, 2, out=sign).sub_(1)
    diag.mul_(sign)
    off.mul_(sign)
    r.abs_()
    torch.mul(r, (2 - _SQRT3) / 2, out=x).add_(_SQRT3)
    torch.mul(r, 1 / 3, out=c2)
    for _ in range(2):
        torch.mul(x, x, out=c0)
        torch.div(torch.addcmul(c2, c0, x, value=2 / 3, out=c1), c0.sub_(1), out=x)
    torch.mul(x, x, out=c0)
    torch.sub(c0, 3, out=c1).mul_(x).sub_(r)
    x.sub_(c1.div_(c0.sub_(1)), alpha=1 / 3)

    # M = B - x I. Its adjugate, laid out as a full 3x3, is (gap1 gap2) v v^T with both
    # gaps negative: its column with the largest diagonal entry is the best v, picked
    # exactly by lerp with weights of 0 or 1.
    diag.sub_(x)
    adj = work[16:25]
    torch.mul(b11, b22, out=adj[0]).addcmul_(b12, b12, value=-1)
    torch.mul(b00, b22, out=adj[4]).addcmul_(b02, b02, value=-1)
    torch.mul(b00, b11, out=adj[8]).addcmul_(b01, b01, value=-1)
    torch.mul(b02, b12, out=adj[1]).addcmul_(b01, b22, value=-1)
    torch.mul(b01, b12, out=adj[2]).addcmul_(b02, b11, value=-1)
    torch.mul(b01, b02, out=adj[5]).addcmul_(b00, b12, value=-1)
    adj[3].copy_(adj[1])
    adj[6:8].copy_(adj[2:6:3])
    v = work[25:28]
    vx, vy, vz = v.unbind()
    torch.lerp(adj[6:9], adj[3:6], torch.ge(adj[4], adj[8], out=c0), out=v)
    torch.ge(adj[0], torch.maximum(adj[4], adj[8], out=c1), out=c0)
    torch.lerp(v, adj[0:3], c0, out=v)
    torch.mul(vx, vx, out=c0).addcmul_(vy, vy).addcmul_(vz, vz).rsqrt_()
    v.mul_(c0)

    # An orthonormal basis u, w of the plane perpendicular to v (Duff et al., negated),
    # stored by component: basis rows u0, w0, u1, w1, u2, w2.
    basis = work[16:22]
    u, w = basis[0::2], basis[1::2]
    c0.fill_(1).copysign_(vz)
    torch.add(c0, vz, out=c1).reciprocal_()
    diagonal = basis[0::3]  # u0, w1
    torch.mul(v[0:2], v[0:2], out=diagonal).mul_(c1).sub_(c0)
    torch.mul(vx, vy, out=basis[1]).mul_(c1)
    basis[2].copy_(basis[1])
    basis[4:6].copy_(v[0:2])

    # M on u, w is [[e, f], [f, g]]: e = u.Mu, f = w.Mu, g = tr M - e (as M v = 0); its
    # eigenvalues are mean +- h, with mean = tr M / 2, half = (e - g) / 2, h = |(half, f)|.
    mu = work[22:25]
    for i, (m0, m1, m2) in enumerate(((b00, b01, b02), (b01, b11, b12), (b02, b12, b22))):
        torch.mul(m0, u[0], out=mu[i]).addcmul_(m1, u[1]).addcmul_(m2, u[2])
    ef = work[28:30]
    e, f = ef.unbind()
    torch.mul(basis[0:2], mu[0], out=ef).addcmul_(basis[2:4], mu[1]).addcmul_(basis[4:6], mu[2])
    mean, half, h = c0, c1, c2
    torch.sum(diag, 0, out=mean).mul_(0.5)
    torch.sub(e, mean, out=half)
    torch.hypot(half, f, out=h)
    # The eigenvector of mean + h lies along (h + half, f) and along (f, h - half); their
    # sum, the second turned to the first's side, has no cancellation. cs: cos and sin.
    cs = work[30:32]
    torch.abs(f, out=cs[0]).add_(half).add_(h).add_(_BASIS_NUDGE)
    torch.sub(h, half, out=cs[1]).copysign_(f).add_(f)
    torch.mul(cs[0], cs[0], out=r).addcmul_(cs[1], cs[1]).rsqrt_()
    cs.mul_(r)

    # Descending: (v, big, small) where the outlier is the largest, else (small, big, v)
    # (B was turned); `top` (0 or 1) picks exactly.
    vectors = torch.empty(6, n, dtype=dtype, device=device)
    largest, middle, small = vectors[0:3], vectors[3:6], mu
    torch.mul(u, cs[0], out=middle).addcmul_(w, cs[1])
    torch.mul(w, cs[0], out=small).addcmul_(u, cs[1], value=-1)
    torch.lerp(small, v, top, out=largest)
    values = torch.empty(3, n, dtype=dtype, device=device)
    torch.add(mean, h, out=values[1])
    torch.sub(mean, h, out=r)  # the small one, the last or first
    torch.mul(r, top, out=values[2])
    torch.sub(r, values[2], out=values[0])
    # Back to A: each eigenvalue is tr (1 + sign p (x + m)) / 3.
    values.add_(x).mul_(p.mul_(third).mul_(sign)).add_(third)
    return values, vectors
