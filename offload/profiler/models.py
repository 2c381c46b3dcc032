"""Online estimators: a smoothed mean with variance, and a cost-versus-size regression.

Both learn one sample at a time in constant time and memory, forget old
samples geometrically (so they follow a link that slows down or a server that
gets busy), and predict without allocating: they sit on the per-call path.

:class:`Smoothed` is TCP's round-trip estimator (RFC 6298: gain 1/8 for the
mean, 1/4 for the deviation). :class:`SizeModel` fits ``log(cost) = a + b *
log(size)`` by exponentially weighted least squares: a power law is the shape
of most workloads (sorting ~n^2, matrix product ~n^3 in the side, copying ~n),
and fitting in log space makes a 10 ms and a 10 s call count alike. The slope
is shrunk towards 1 when the sizes seen so far are too alike to tell it, and a
sample far off the fit (over 3 deviations) is clipped before it is learned, so
one stalled call does not wreck the model.
"""

from __future__ import annotations

import math
from typing import Any

_MIN = 1e-9  # a cost of zero has no logarithm; a nanosecond is "free"


class Smoothed:
    """An exponentially weighted mean and mean deviation of a stream of samples."""

    __slots__ = ("count", "dev", "gain", "mean")

    def __init__(self, gain: float = 0.125) -> None:
        self.mean: float | None = None
        self.dev = 0.0
        self.gain = gain
        self.count = 0

    def add(self, sample: float) -> None:
        """Learn one sample."""
        self.count += 1
        if self.mean is None:
            self.mean, self.dev = sample, sample / 2
            return
        self.dev += 2 * self.gain * (abs(sample - self.mean) - self.dev)
        self.mean += self.gain * (sample - self.mean)

    def to_json(self) -> list[Any]:
        return [self.mean, self.dev, self.count]

    def load(self, data: list[Any]) -> None:
        self.mean, self.dev, self.count = data[0], float(data[1]), int(data[2])


class SizeModel:
    """Predicts a cost (seconds, bytes) from a call's size, learned online in log-log space.

    ``forget`` is the weight kept by past samples at each new one: 0.8 means
    the last five or so samples dominate, so a change of regime is learned
    within about ten calls. ``slope_prior`` is the exponent
    assumed until the sizes seen differ enough to measure it. The fit
    (``log cost = a + b * log size``) is redone at each sample, so a
    prediction is one multiply-add and one ``exp``: callers on the hot path
    inline ``exp(m.a + m.b * x)`` after checking ``m.count``.
    """

    __slots__ = (
        "a",
        "b",
        "count",
        "err",
        "forget",
        "seen",
        "slope_prior",
        "sx",
        "sxx",
        "sxy",
        "sy",
        "w",
    )

    def __init__(self, forget: float = 0.8, slope_prior: float = 1.0) -> None:
        self.forget = forget
        self.slope_prior = slope_prior
        self.w = self.sx = self.sy = self.sxx = self.sxy = 0.0
        self.a, self.b = 0.0, slope_prior
        self.err = 0.0  # smoothed squared residual, in log units
        self.count = 0
        #: Caller's clock (a decision counter) at the last sample or try; very old at first.
        self.seen = -(2**31)

    def predict(self, log_size: float) -> float | None:
        """The expected cost at ``exp(log_size)``, or ``None`` before any sample."""
        return math.exp(self.a + self.b * log_size) if self.count else None

    def add(self, log_size: float, cost: float, clock: int = 0) -> None:
        """Learn that a call of size ``exp(log_size)`` cost ``cost``."""
        y = math.log(cost if cost > _MIN else _MIN)
        if self.count >= 3:
            residual = y - (self.a + self.b * log_size)
            bound = 3.0 * math.sqrt(self.err) + 0.1
            if residual > bound:
                y -= residual - bound
            elif residual < -bound:
                y -= residual + bound
            self.err += 0.1 * (residual * residual - self.err)
        f = self.forget
        self.w = self.w * f + 1.0
        self.sx = self.sx * f + log_size
        self.sy = self.sy * f + y
        self.sxx = self.sxx * f + log_size * log_size
        self.sxy = self.sxy * f + log_size * y
        self.count += 1
        self.seen = clock
        self._fit()

    def _fit(self) -> None:
        w = self.w
        mx, my = self.sx / w, self.sy / w
        # Ridge towards the prior slope: with no spread in x, the prior decides.
        spread = self.sxx / w - mx * mx
        slope = (self.sxy / w - mx * my + 0.05 * self.slope_prior) / (spread + 0.05)
        self.b = min(max(slope, 0.0), 4.0)
        self.a = my - self.b * mx

    def to_json(self) -> list[float]:
        return [self.w, self.sx, self.sy, self.sxx, self.sxy, self.err, self.count, self.seen]

    def load(self, data: list[float]) -> None:
        self.w, self.sx, self.sy, self.sxx, self.sxy, self.err = (float(v) for v in data[:6])
        self.count, self.seen = int(data[6]), int(data[7])
        if self.count:
            self._fit()
