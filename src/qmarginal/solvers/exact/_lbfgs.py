"""Batched L-BFGS in compact form (the quasi-Newton directions of the convex and factored paths)."""

from __future__ import annotations

import numpy as np

__all__ = ["LBFGS"]


class LBFGS:
    """Batched L-BFGS in the compact form (Byrd, Nocedal and Schnabel 1994).

    H g = gamma g + [S gamma Y] [[R^-T (D + gamma Y^T Y) R^-1, -R^-T], [-R^-1, 0]]
          [S^T g; gamma Y^T g],
    with the m latest pairs (s_i, y_i) as rows of S, Y (viewed as real vectors), R_ij = s_i.y_j
    (i <= j), D = diag(s_i.y_i). The pairs live in a ring buffer (a new pair overwrites the
    oldest row in place) and S Y^T, Y Y^T are updated on push, so that only the small m x m
    quantities are reordered: a push costs three and a direction four batched products.
    Pairs with s.y <= 0 for an element are replaced by (s, s) there (unit curvature).
    """

    def __init__(self, memory: int):
        self.memory = memory
        self.S = None  # (B, m, n) real, ring buffer
        self.Y = None
        self.sty = None  # (B, m, m): s_i . y_j, buffer order
        self.yty = None
        self.order: list = []  # buffer rows, oldest first

    @staticmethod
    def _real(x):
        torch = __import__("torch")
        return (torch.view_as_real(x.contiguous()) if x.is_complex() else x).reshape(
            x.shape[0], -1)

    def push(self, s, y):
        torch = __import__("torch")
        s, y = self._real(s), self._real(y)
        sy = (s[:, None, :] @ y[:, :, None])[:, 0, 0]
        bad = ~(sy > 1e-300)
        if bool(bad.any()):
            y = torch.where(bad[:, None], s, y)
        if self.S is None:
            Bn, n, m = s.shape[0], s.shape[1], self.memory
            self.S = s.new_zeros((Bn, m, n))
            self.Y = s.new_zeros((Bn, m, n))
            self.sty = s.new_zeros((Bn, m, m))
            self.yty = s.new_zeros((Bn, m, m))
        j = len(self.order) if len(self.order) < self.memory else self.order.pop(0)
        self.order.append(j)
        self.S[:, j] = s
        self.Y[:, j] = y
        self.sty[:, :, j] = (self.S @ y[:, :, None])[..., 0]  # s_i . y_new
        self.sty[:, j, :] = (self.Y @ s[:, :, None])[..., 0]  # s_new . y_i
        self.yty[:, :, j] = self.yty[:, j, :] = (self.Y @ y[:, :, None])[..., 0]

    def direction(self, g, default_scale=None):
        torch = __import__("torch")
        shape, cplx = g.shape, g.is_complex()
        gr = self._real(g)
        if not self.order:
            d = gr if default_scale is None else gr * default_scale
        else:
            o = torch.tensor(self.order, device=gr.device)
            S, Y = self.S, self.Y
            sty = self.sty[:, o][:, :, o]
            yty = self.yty[:, o][:, :, o]
            dg = torch.diagonal(sty, dim1=-2, dim2=-1)
            ok = dg > 0
            eye = torch.eye(sty.shape[-1], dtype=sty.dtype, device=sty.device)
            # the upper triangle by a mask built in numpy: torch.triu runs multithreaded even
            # on m x m and, on a busy machine, waits milliseconds for its threads (15x slower
            # solves were measured with the other core loaded)
            R = sty * torch.from_numpy(np.triu(np.ones(eye.shape))).to(sty.device)
            R = torch.where(ok[:, None, :] | ~eye.bool(), R, eye.expand_as(R))
            yy_last = yty[:, -1, -1]
            gamma = torch.where(yy_last > 0, dg[:, -1] / yy_last.clamp_min(1e-300),
                                torch.ones_like(yy_last))
            a = (S @ gr[..., None])[:, o]  # (B, k, 1), chronological
            b = gamma[:, None, None] * (Y @ gr[..., None])[:, o]
            ria = torch.linalg.solve_triangular(R, a, upper=True)  # R^-1 a
            dmat = torch.diag_embed(dg * ok) + gamma[:, None, None] * yty
            p = torch.linalg.solve_triangular(R.mT, (dmat @ ria) - b, upper=False)
            q = -gamma[:, None, None] * ria
            # back to buffer rows (rows not yet filled get 0)
            pb = gr.new_zeros((gr.shape[0], self.memory, 1))
            qb = gr.new_zeros((gr.shape[0], self.memory, 1))
            pb[:, o], qb[:, o] = p, q
            d = gamma[:, None] * gr + (S.mT @ pb)[..., 0] + (Y.mT @ qb)[..., 0]
        d = -d
        if cplx:
            d = torch.view_as_complex(d.reshape(shape + (2,)))
        return d.reshape(shape)
