"""Muon (orthogonalised momentum) for convolution filters, SGD-Nesterov for everything else.

Muon (Keller Jordan, 2024; as in KellerJordan/cifar10-airbench, MIT) replaces each filter bank's
momentum by the nearest semi-orthogonal matrix (a few Newton-Schulz iterations): every direction
of the update gets the same size, so small but useful directions are not drowned by large ones.
One optimizer holds both kinds of group (``muon=True`` or not), so one LR scheduler drives all.
"""
from __future__ import annotations

import torch


def zeropower_via_newtonschulz(G: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T of G = U S V^T (all singular values pushed towards 1), for 2-D G.

    The quintic iteration's coefficients maximise the slope at zero, so 3 steps suffice; the
    singular values land in roughly [0.7, 1.2], which is all an update direction needs.
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G / (G.norm() + eps)
    transpose = G.size(0) > G.size(1)
    if transpose:
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if transpose else X


class Muon(torch.optim.Optimizer):
    """Param groups with ``muon=True`` (filters, ndim >= 2): Nesterov momentum, orthogonalised,
    with each filter bank rescaled to a fixed norm (sqrt(out channels)) before the update, which
    replaces weight decay. Other groups: plain SGD with Nesterov momentum and weight decay.
    """

    def __init__(self, params, lr: float, momentum: float, weight_decay: float = 0.0,
                 muon: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, muon=muon))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 (the torch.optim signature)
        for group in self.param_groups:
            lr, mom = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not group["muon"] and group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(g))
                buf.mul_(mom).add_(g)
                g = g.add(buf, alpha=mom)  # Nesterov
                if group["muon"]:
                    p.mul_(len(p) ** 0.5 / p.norm())
                    g = zeropower_via_newtonschulz(g.reshape(len(g), -1)).view(g.shape)
                p.add_(g, alpha=-lr)
