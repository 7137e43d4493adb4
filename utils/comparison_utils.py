"""Whether two models differ: the mean difference over seeds with its t-interval.

Student's t quantiles are computed here (regularised incomplete beta function, bisection), so
that the project needs no SciPy for one number.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (Lentz's method)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (df may be fractional: Welch)."""
    if t == 0:
        return 0.5
    x = df / (df + t * t)
    a, b = df / 2, 0.5
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    tail = front * _betacf(a, b, x) / a if x < (a + 1) / (a + b + 2) else 1 - front * _betacf(b, a, 1 - x) / b
    return 1 - tail / 2 if t >= 0 else tail / 2


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on :func:`t_cdf`)."""
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def compare(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], key: str = "test_acc",
            confidence: float = 0.95) -> dict[str, Any]:
    """Mean of ``a`` minus mean of ``b`` for ``key``, with its ``confidence`` t-interval.

    Paired by seed where both models ran the same seeds (a seed fixes the batch order, shared by
    both, so the per-seed differences cancel that part of the noise); Welch's interval otherwise.
    With 3 seeds the t quantile is large (4.30 for a paired test), so intervals are wide: a
    difference is real only where the interval excludes zero. Diverged seeds (None) are dropped.
    With one seed on each side (the same one) the difference comes without an interval.
    """
    va = {r.get("seed"): r.get(key) for r in a if r.get(key) is not None}
    vb = {r.get("seed"): r.get(key) for r in b if r.get(key) is not None}
    shared = sorted(set(va) & set(vb), key=str)
    q = (1 + confidence) / 2
    if len(shared) >= 2 and len(shared) == len(va) == len(vb):
        d = np.array([va[s] - vb[s] for s in shared], dtype=float)
        n, diff = len(d), float(d.mean())
        df, se = n - 1, float(d.std(ddof=1) / math.sqrt(n))
        test = "paired"
    elif len(va) >= 2 and len(vb) >= 2:
        xa, xb = np.array(list(va.values()), dtype=float), np.array(list(vb.values()), dtype=float)
        sa, sb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
        diff, se = float(xa.mean() - xb.mean()), math.sqrt(sa + sb)
        df = (sa + sb) ** 2 / (sa ** 2 / (len(xa) - 1) + sb ** 2 / (len(xb) - 1)) if sa + sb > 0 else math.inf
        n, test = min(len(xa), len(xb)), "Welch"
    elif len(shared) == 1 and len(va) == len(vb) == 1:  # one seed (a check run): a difference, no interval
        return {"diff": va[shared[0]] - vb[shared[0]], "low": None, "high": None, "n": 1, "test": "n < 2",
                "real": False}
    else:
        return {"diff": None, "low": None, "high": None, "n": min(len(va), len(vb)), "test": "n < 2",
                "real": False}
    half = se * (t_quantile(q, df) if math.isfinite(df) else 1.959963984540054)
    return {"diff": diff, "low": diff - half, "high": diff + half, "n": n, "df": df, "test": test,
            "real": bool(diff - half > 0 or diff + half < 0)}


def verdict(c: dict[str, Any], scale: float = 100.0, unit: str = "п.п.") -> str:
    """What a comparison from :func:`compare` allows one to say, in the README's words."""
    if c["diff"] is None:
        return "нужно ≥ 2 сидов"
    if c["low"] is None:
        return "один сид: без интервала"
    if c["real"]:
        return "различие реально"
    return f"в пределах шума (±{scale * (c['high'] - c['low']) / 2:.2f} {unit})"
