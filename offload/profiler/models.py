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

# A model off by more than a factor of e (its mean squared log residual) does not move a
# drift: it is still finding its shape. Its residuals include the drift's own lag (a
# drift that has moved half-way to a server 20x slower leaves the model ~4x off), so a
# tighter bound freezes a drift that is still catching up.
ERR_MAX = 1.0
_MIN = 1e-9  # a cost of zero has no logarithm; a nanosecond is "free"
_log, _sqrt = math.log, math.sqrt


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
        """Restore from :meth:`to_json`; raises ``ValueError`` on anything malformed."""
        mean = None if data[0] is None else float(data[0])
        dev, count = float(data[1]), int(data[2])
        if (mean is not None and not math.isfinite(mean)) or not math.isfinite(dev) or count < 0:
            raise ValueError("malformed smoothed value")
        self.mean, self.dev, self.count = mean, dev, count


#: ``SizeModel.seen`` of a side never tried.
NEVER = -(2**31)


class SizeModel:
    """Predicts a cost (seconds, bytes) from a call's size, learned online in log-log space.

    The fit is ``log cost = a + b * log size + c * side``: ``side`` is 0 or 1,
    so one model can hold a function's execution time on the server (0) and
    on this device (1). Both run the same code, so they share the shape
    ``b`` and differ by the speed factor ``exp(c)``: every call on either
    side sharpens the estimate of both, and a side seen only at small sizes
    is still predicted well at large ones. Until a side has been seen, ``c``
    is ``side_prior`` (e.g. how much slower this device was on other
    functions). A one-sided model (bytes) just never uses side 1.

    ``forget`` is the weight kept by past samples at each new one: 0.8
    means the last five or so dominate, so a change of regime is learned
    within about ten calls. ``slope_prior`` is the exponent assumed until
    the sizes seen differ enough to measure it. The fit is redone at each
    sample and published as one tuple, :attr:`params` ``(a, b, c)``, so a
    reader on another thread never mixes an old ``a`` with a new ``b``, and a
    prediction is a multiply-add and an ``exp``.
    """

    __slots__ = (
        "counts",
        "err",
        "forget",
        "one_sided",
        "params",
        "seen",
        "slope_prior",
        "sums",
    )

    def __init__(self, forget: float = 0.8, slope_prior: float = 1.0) -> None:
        self.forget = forget
        self.slope_prior = slope_prior
        #: Per side, decayed sums of weight, x, y, x*x and x*y. Each side forgets
        #: only when it learns: a side seldom used keeps what it knew.
        self.sums = [[0.0] * 5, [0.0] * 5]
        #: The fit ``(a, b, c)``, replaced whole at each sample.
        self.params = (0.0, slope_prior, 0.0)
        #: Per side, the smoothed squared residual (log units): how well it predicts.
        self.err = [0.0, 0.0]
        #: Samples per side.
        self.counts = [0, 0]
        #: Caller's clock (a decision counter) at each side's last sample or try.
        self.seen = [NEVER, NEVER]
        #: Side 1's sums are all exactly 0.0 (never learned): :meth:`add` fits faster.
        self.one_sided = True

    @property
    def count(self) -> int:
        return self.counts[0] + self.counts[1]

    def predict(self, log_size: float, side: int = 0) -> float | None:
        """The expected cost on ``side`` at ``exp(log_size)``, or ``None`` before any sample."""
        if not self.count:
            return None
        a, b, c = self.params
        return math.exp(a + b * log_size + (c if side else 0.0))

    def add(
        self,
        log_size: float,
        cost: float,
        clock: int = 0,
        side: int = 0,
        side_prior: float = 0.0,
    ) -> None:
        """Learn that a call of size ``exp(log_size)`` on ``side`` cost ``cost``.

        It runs three times after every remote call: written for the interpreter
        (locals, unpacking, one slice store), the same floating-point operations
        in the same order as the plain formulas. While side 1 has never learned
        (bytes; time with every call on the server) the fit is :meth:`_fit` with
        side 1's sums all zero, inlined: the terms that are then exactly zero
        are left out (the result is the same to the bit, see test_estimators).
        """
        y = _log(cost if cost > _MIN else _MIN)
        counts = self.counts
        if counts[side] >= 3:
            a, b, c = self.params
            residual = y - (a + b * log_size + (c if side else 0.0))
            err = self.err[side]
            bound = 3.0 * _sqrt(err) + 0.1
            if residual > bound:
                y -= residual - bound
            elif residual < -bound:
                y -= residual + bound
            self.err[side] = err + 0.1 * (residual * residual - err)
        f, x = self.forget, log_size
        s = self.sums[side]  # unrolled: this runs after every call
        w, sx, sy, sxx, sxy = s
        w, sx, sy, sxx, sxy = w * f + 1.0, sx * f + x, sy * f + y, sxx * f + x * x, sxy * f + x * y
        s[:] = (w, sx, sy, sxx, sxy)
        counts[side] += 1
        self.seen[side] = clock
        if side or not self.one_sided:
            self.one_sided = False
            self._fit(side_prior)
            return
        # _fit with side 1's sums all 0.0: mi = cxi = 0.0, cii = 0.01.
        mx, my = sx / w, sy / w
        cxx = sxx / w - mx * mx + 0.01
        rx = sxy / w - mx * my + 0.01 * self.slope_prior
        b = (rx * 0.01) / (cxx * 0.01)
        b = 0.0 if b < 0.0 else 4.0 if b > 4.0 else b
        self.params = (my - b * mx, b, (0.0 + 0.01 * side_prior) / 0.01)

    def covers(self, log_size: float, side: int = 0) -> bool:
        """Whether ``side`` has samples and ``exp(log_size)`` is within the sizes learned."""
        if self.counts[side] < 3:
            return False
        w, sx, _, sxx, _ = self.sums[side]
        mean = sx / w
        return (log_size - mean) ** 2 <= 4 * (sxx / w - mean * mean) + 0.25

    def _fit(self, side_prior: float) -> None:
        # Weighted least squares of y on (1, x, side) over both sides' samples,
        # centred, with ridge terms pulling the slope towards slope_prior and
        # the side factor towards side_prior: they decide when the data cannot
        # (one size seen, or one side).
        (tw, tx, ty, txx, txy), (hw, hx, hy, hxx, hxy) = self.sums
        w = tw + hw
        mx, mi, my = (tx + hx) / w, hw / w, (ty + hy) / w
        cxx = (txx + hxx) / w - mx * mx + 0.01
        cxi = hx / w - mx * mi
        cii = mi - mi * mi + 0.01
        rx = (txy + hxy) / w - mx * my + 0.01 * self.slope_prior
        ri = hy / w - mi * my + 0.01 * side_prior
        b = (rx * cii - cxi * ri) / (cxx * cii - cxi * cxi)
        b = 0.0 if b < 0.0 else 4.0 if b > 4.0 else b  # min(max(b, 0), 4), NaN and -0.0 alike
        c = (ri - cxi * b) / cii
        self.params = (my - b * mx - c * mi, b, c)

    def to_json(self) -> list[float]:
        return [*self.sums[0], *self.sums[1], *self.err, *self.counts, *self.seen]

    def load(self, data: list[float]) -> None:
        """Restore from :meth:`to_json`; raises ``ValueError`` on anything malformed."""
        values = [float(v) for v in data]
        if len(values) != 16 or not all(math.isfinite(v) for v in values):
            raise ValueError("a size model is 16 finite numbers")
        sums = [values[0:5], values[5:10]]
        err, counts = values[10:12], [int(v) for v in values[12:14]]
        if (
            min(err) < 0
            or min(counts) < 0
            or any((n > 0) != (s[0] > 0) for n, s in zip(counts, sums))
        ):
            raise ValueError("inconsistent size model")
        self.sums, self.err, self.counts = sums, err, counts
        self.seen = [int(v) for v in values[14:16]]
        self.one_sided = all(v == 0.0 and math.copysign(1.0, v) > 0 for v in sums[1])
        if self.count:
            self._fit(0.0)


class Drift:
    """A multiplier shared by the models of one side: where recent costs land against them.

    A server that gets busy, or a device whose CPU another app takes, slows
    every function at once; per-function models would each have to relearn
    it, call by call. Instead each observation's residual (log of actual over
    predicted) moves this shared factor by ``gain``, every prediction on that
    side is multiplied by :attr:`value`, and the models learn costs divided
    by it. One call of any function is enough to shift the estimates of all.
    Only calls of sizes a model has already seen, by a model that has been
    predicting well, and of at least ``floor`` seconds count: a miss where
    the model extrapolates or is still finding its shape says more about the
    model than about the machine, and a call of a millisecond measures fixed
    costs and timer noise rather than speed.
    """

    __slots__ = ("floor", "gain", "log", "updates", "value")

    def __init__(self, gain: float = 0.7, floor: float = 0.01) -> None:
        self.gain = gain
        self.floor = floor
        self.updates = 0  # observations that moved it
        self.log = 0.0
        self.value = 1.0

    def fade(self, keep: float) -> None:
        """Pessimism fades: a side seen slow long ago is probably not slow now.

        For a caller that lets disuse fade it (the decider does not: it explores
        with a cheap call instead). Only a slowdown fades (``log > 0``): a side
        believed fast is tried, and so corrected, anyway.
        """
        if self.log > 0.01:
            self.log *= keep
            self.value = math.exp(self.log)

    def normalize(self, model: SizeModel, log_size: float, cost: float, side: int = 0) -> float:
        """Learn from ``cost`` observed on ``model``'s ``side``; return it as the model should."""
        if cost >= self.floor and model.covers(log_size, side) and model.err[side] < ERR_MAX:
            a, b, c = model.params
            predicted = a + b * log_size + (c if side else 0.0)
            residual = math.log(cost if cost > _MIN else _MIN) - predicted
            self.log = min(3.0, max(-3.0, self.log + self.gain * (residual - self.log)))
            self.value = math.exp(self.log)
            self.updates += 1
        return cost / self.value
