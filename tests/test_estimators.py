"""The profiler's estimators on synthetic data: they converge, adapt, and shrug off outliers."""

from __future__ import annotations

import math
import random

import pytest

from offload.profiler import Drift, Link, SizeModel, Smoothed
from offload.profiler.sizes import argument_bytes, value_bytes


def feed(model: SizeModel, size: float, cost: float, clock: int = 0) -> None:
    model.add(math.log(size), cost, clock)


def test_size_model_learns_a_power_law_and_extrapolates():
    rng = random.Random(1)
    model = SizeModel()
    for _ in range(60):
        n = rng.uniform(1_000, 20_000)
        feed(model, n, 1e-8 * n**2 * rng.uniform(0.95, 1.05))
    assert model.params[1] == pytest.approx(2.0, abs=0.15)
    assert model.predict(math.log(40_000)) == pytest.approx(1e-8 * 40_000**2, rel=0.2)


def test_size_model_with_one_size_assumes_the_prior_slope():
    model = SizeModel(slope_prior=1.0)
    for _ in range(5):
        feed(model, 1000, 0.5)
    assert model.predict(math.log(1000)) == pytest.approx(0.5)
    assert model.predict(math.log(2000)) == pytest.approx(1.0, rel=0.05)


def test_size_model_adapts_when_the_cost_changes():
    model = SizeModel()
    for _ in range(30):
        feed(model, 5000, 1.0)
    for _ in range(12):
        feed(model, 5000, 3.0)  # the server got busy
    assert model.predict(math.log(5000)) == pytest.approx(3.0, rel=0.15)


def test_one_outlier_barely_moves_the_model():
    model = SizeModel()
    for _ in range(20):
        feed(model, 5000, 1.0)
    feed(model, 5000, 100.0)  # a stalled call
    assert model.predict(math.log(5000)) < 1.2


def test_smoothed_tracks_mean_and_deviation():
    rtt = Smoothed()
    for i in range(200):
        rtt.add(0.010 + (0.002 if i % 2 else -0.002))
    assert rtt.mean == pytest.approx(0.010, rel=0.05)
    assert rtt.dev == pytest.approx(0.002, rel=0.3)


def test_link_separates_rtt_overhead_and_bandwidth():
    link = Link(prior_bps=1e9)
    for _ in range(10):
        link.on_rtt(0.004)
    for _ in range(10):  # small calls: 4 ms RTT + 1 ms overhead + 20 ms execution
        link.on_call(up=1000, down=100, turnaround=0.025, server=0.020)
    assert link.overhead.mean == pytest.approx(0.001, abs=3e-4)
    for _ in range(20):  # 2 MB up at 4 MB/s, then 50 ms execution
        link.on_call(up=2_000_000, down=100, turnaround=0.005 + 0.5 + 0.05, server=0.05)
    assert link.up_rate == pytest.approx(4e6, rel=0.05)
    assert link.down_rate == 1e9  # nothing large came down: still the prior
    for _ in range(20):  # the link slows down to 1 MB/s
        link.on_call(up=2_000_000, down=100, turnaround=0.005 + 2.0 + 0.05, server=0.05)
    assert link.up_rate == pytest.approx(1e6, rel=0.05)


def test_link_learns_download_from_large_results_and_probes():
    link = Link(prior_bps=1e9)
    link.on_rtt(0.002)
    link.on_call(up=100, down=1_000_000, turnaround=0.002 + 0.5 + 0.01, server=0.01)
    assert link.down_rate == pytest.approx(2e6, rel=0.05)
    link.on_probe(up=500_000, down=0, seconds=0.002 + 0.25)
    assert link.up_rate == pytest.approx(2e6, rel=0.05)


def test_a_bandwidth_step_replaces_the_estimate_noise_is_averaged():
    """A sample 8 times off the estimate is a step (the link weakened or recovered):
    it replaces the estimate at once; a sample within that is averaged in."""
    link = Link(prior_bps=1e9)
    link.on_rtt(0.002)
    for _ in range(5):  # 1 MB up at 10 MB/s
        link.on_call(up=1_000_000, down=100, turnaround=0.002 + 0.1 + 0.01, server=0.01)
    assert link.up_rate == pytest.approx(1e7, rel=0.05)
    link.on_call(up=1_000_000, down=100, turnaround=0.002 + 4.0 + 0.01, server=0.01)
    assert link.up_rate == pytest.approx(2.5e5, rel=0.05)  # 40 times slower: at once
    link.on_call(up=1_000_000, down=100, turnaround=0.002 + 2.0 + 0.01, server=0.01)
    assert 2.5e5 < link.up_rate < 5e5  # twice as fast: averaged, not jumped to
    link.on_call(up=1_000_000, down=100, turnaround=0.002 + 0.1 + 0.01, server=0.01)
    assert link.up_rate == pytest.approx(1e7, rel=0.05)  # recovered: at once too


def test_a_small_call_faster_than_a_stale_estimate_lifts_it():
    """Measured at 250 KB/s (the link was weak), then only calls too small to measure it
    (under 32 KiB one way): one that moves 20 KB in 2 ms shows the link is at least
    10 MB/s, 40 times the estimate, which it replaces; one a shaper's burst or TCP's
    first window carries whole (8 KB), or one within 8 times the estimate, says nothing."""
    link = Link(prior_bps=1e9)
    link.on_rtt(0.002)
    link.on_call(up=1_000_000, down=100, turnaround=0.002 + 4.0 + 0.01, server=0.01)
    assert link.up_rate == pytest.approx(2.5e5, rel=0.05)
    link.on_call(up=8_000, down=100, turnaround=0.002 + 0.0001 + 0.01, server=0.01)
    assert link.up_rate == pytest.approx(2.5e5, rel=0.05)  # within a burst: nothing
    link.on_call(up=20_000, down=100, turnaround=0.002 + 0.04 + 0.01, server=0.01)
    assert link.up_rate == pytest.approx(2.5e5, rel=0.05)  # 500 KB/s: within 8 times
    link.on_call(up=20_000, down=100, turnaround=0.002 + 0.002 + 0.01, server=0.01)
    assert link.up_rate > 5e6  # at least 10 MB/s: the estimate was stale
    assert link.up_bps.count == 2


def test_a_small_call_far_slower_than_the_estimate_lowers_it():
    """Measured at 10 MB/s, then a call too small to measure the link (20 KB) takes 60 ms
    more than its run and round trip: 330 KB/s, 30 times slower, over a transfer many
    round trips long, says the link weakened, and replaces the estimate before a large
    call pays for it (nor does its slow transfer pass for overhead). One within 8 times,
    or slower by a few round trips only (jitter), says nothing."""
    links = []
    for _ in range(3):
        link = Link(prior_bps=1e9)
        link.on_rtt(0.005)
        link.on_call(up=1_000_000, down=100, turnaround=0.005 + 0.1 + 0.01, server=0.01)
        assert link.up_rate == pytest.approx(1e7, rel=0.05)
        links.append(link)
    weak, slower, jitter = links
    weak.on_call(up=20_000, down=100, turnaround=0.005 + 0.06 + 0.01, server=0.01)
    assert 2e5 < weak.up_rate < 5e5  # the link weakened
    assert weak.up_bps.count == 2
    assert weak.overhead.mean == pytest.approx(0.0, abs=1e-3)
    slower.on_call(up=20_000, down=100, turnaround=0.005 + 0.01 + 0.01, server=0.01)
    assert slower.up_rate == pytest.approx(1e7, rel=0.05)  # 2 MB/s: within 8 times
    jitter.on_call(up=20_000, down=100, turnaround=0.005 + 0.03 + 0.01, server=0.01)
    assert jitter.up_rate == pytest.approx(1e7, rel=0.05)  # 15x slower, 6 round trips


def test_size_estimates_follow_the_data_cheaply():
    assert value_bytes(list(range(40_000))) == 320_000
    assert value_bytes([[1] * 450] * 450) == 450 * 450 * 8
    assert value_bytes(b"x" * 100) == 100
    np = pytest.importorskip("numpy")
    assert value_bytes(np.zeros((100, 100))) == 80_000
    assert argument_bytes((3, "abc"), {"k": [1.0, 2.0]}) == 1 + 8 + 3 + 16
    deep: list = [1]
    for _ in range(100):
        deep = [deep]
    assert value_bytes(deep) > 0  # bounded depth, no recursion error


def test_two_sided_model_shares_the_shape_between_sides():
    model = SizeModel()
    for n in (100, 200, 400, 800):  # the server sees all sizes: cost ~ n^2
        for _ in range(2):
            model.add(math.log(n), 1e-6 * n * n, side=0)
    for _ in range(3):  # this device only small ones, 4 times slower
        model.add(math.log(100), 4e-6 * 100 * 100, side=1)
    assert model.predict(math.log(800), side=1) == pytest.approx(4e-6 * 800**2, rel=0.2)
    assert model.counts == [8, 3]


def test_a_side_used_rarely_keeps_what_it_knew():
    model = SizeModel()
    for _ in range(5):
        model.add(math.log(1000), 0.030, side=0)
    for _ in range(500):  # many calls on the other side do not wash it out
        model.add(math.log(1000), 0.010, side=1)
    assert model.predict(math.log(1000), side=0) == pytest.approx(0.030, rel=0.05)


def test_drift_moves_every_prediction_and_ignores_tiny_calls():
    a, b = SizeModel(), SizeModel()
    drift = Drift()
    for _ in range(5):
        a.add(math.log(1000), drift.normalize(a, math.log(1000), 0.1))
        b.add(math.log(1000), drift.normalize(b, math.log(1000), 0.2))
    assert drift.value == pytest.approx(1.0, abs=0.05)
    a.add(math.log(1000), drift.normalize(a, math.log(1000), 0.4))  # a is 4x slower now
    assert drift.value > 2.5  # ... and so, the drift says, is b
    before = drift.value
    drift.normalize(a, math.log(1000), 0.0001)  # a 0.1 ms call measures timer noise
    assert drift.value == before


def test_link_follows_the_rate_its_interface_reports():
    link = Link()
    link.on_rtt(0.001)
    link.on_reported(54e6 / 8)
    # 450 kB took 0.15 s outside execution at 54 Mbit/s: 3 MB/s, the wire 6.75 of it.
    link.on_call(250_000, 200_000, 0.151 + 0.5, 0.5)
    fast = link.up_rate
    assert 2.5e6 < fast < 3.5e6 and link.radio_up < 1.0
    link.on_reported(2e6 / 8)  # a weak signal: the wire's part grows, the rest stays
    assert 0.2e6 < link.up_rate < 0.25e6
    assert link.radio_up == pytest.approx(link.up_rate / (2e6 / 8))
    link.on_reported(54e6 / 8)  # and back
    assert link.up_rate == pytest.approx(fast)
    link.on_reported(None)  # no longer reported: the measurement alone
    assert link.up_rate == pytest.approx(fast) and link.radio_up == 1.0


def test_a_sample_at_a_new_reported_rate_replaces_the_old_one():
    link = Link()
    link.on_rtt(0.001)
    link.on_reported(54e6 / 8)
    link.on_call(250_000, 200_000, 0.151 + 0.5, 0.5)
    link.on_reported(8e6 / 8)
    predicted = link.up_rate
    link.on_call(250_000, 200_000, 450_000 / predicted + 0.001 + 0.5, 0.5)
    assert link.up_rate == pytest.approx(predicted, rel=0.05)
    assert link.learned_at == 8e6 / 8


def _plain_add(m: SizeModel, x: float, cost: float, side: int, side_prior: float) -> None:
    """SizeModel.add as plain formulas (before it was written for speed): the reference."""
    y = math.log(cost if cost > 1e-9 else 1e-9)
    if m.counts[side] >= 3:
        a, b, c = m.params
        residual = y - (a + b * x + (c if side else 0.0))
        err = m.err[side]
        bound = 3.0 * math.sqrt(err) + 0.1
        if residual > bound:
            y -= residual - bound
        elif residual < -bound:
            y -= residual + bound
        m.err[side] = err + 0.1 * (residual * residual - err)
    f, s = m.forget, m.sums[side]
    s[0], s[1], s[2], s[3], s[4] = (s[0] * f + 1, s[1] * f + x, s[2] * f + y,
                                    s[3] * f + x * x, s[4] * f + x * y)  # fmt: skip
    m.counts[side] += 1
    there, here = m.sums
    w, sx, sy = there[0] + here[0], there[1] + here[1], there[2] + here[2]
    sxx, sxy = there[3] + here[3], there[4] + here[4]
    mx, mi, my = sx / w, here[0] / w, sy / w
    cxx = sxx / w - mx * mx + 0.01
    cxi = here[1] / w - mx * mi
    cii = mi - mi * mi + 0.01
    rx = sxy / w - mx * my + 0.01 * m.slope_prior
    ri = here[2] / w - mi * my + 0.01 * side_prior
    b = min(max((rx * cii - cxi * ri) / (cxx * cii - cxi * cxi), 0.0), 4.0)
    c = (ri - cxi * b) / cii
    m.params = (my - b * mx - c * mi, b, c)


def test_size_model_add_is_the_plain_formulas_to_the_bit():
    rng = random.Random(7)
    odd = [0.0, -0.0, 1e-12, 1.0, 1e300, 1e-320]
    for _ in range(300):
        forget, prior = rng.choice([0.5, 0.8, 0.95]), rng.uniform(-2, 3)
        fast, plain = SizeModel(forget, prior), SizeModel(forget, prior)
        for _ in range(rng.randint(1, 30)):
            x = rng.choice([0.0, 3.0, rng.uniform(0, 25)])
            cost = rng.choice([rng.lognormvariate(-5, 4), rng.choice(odd)])
            side, side_prior = rng.choice([0, 0, 1]), rng.choice([0.0, rng.uniform(-3, 3)])
            fast.add(x, cost, 0, side, side_prior)
            _plain_add(plain, x, cost, side, side_prior)
            assert repr((fast.params, fast.err, fast.sums)) == repr(
                (plain.params, plain.err, plain.sums)
            )


def test_size_model_one_sided_fit_is_the_plain_formulas_to_the_bit():
    # Side 1 never learned (bytes; time with every call remote): add's inlined fit.
    rng = random.Random(11)
    odd = [0.0, -0.0, 1e-12, 1.0, 1e300, 1e-320]
    for _ in range(300):
        forget, prior = rng.choice([0.5, 0.8, 0.9]), rng.choice([0.0, 1.0, rng.uniform(-2, 3)])
        fast, plain = SizeModel(forget, prior), SizeModel(forget, prior)
        side_prior = rng.choice([0.0, -0.0, rng.uniform(-3, 3)])
        for _ in range(rng.randint(1, 40)):
            x = rng.choice([0.0, 3.0, rng.uniform(0, 25)])
            cost = rng.choice([rng.lognormvariate(-5, 4), rng.choice(odd)])
            fast.add(x, cost, 0, 0, side_prior)
            _plain_add(plain, x, cost, 0, side_prior)
            assert fast.one_sided
            assert repr((fast.params, fast.err, fast.sums)) == repr(
                (plain.params, plain.err, plain.sums)
            )
        restored = SizeModel(forget, prior)
        restored.load(fast.to_json())
        assert restored.one_sided and restored.params[:2] == fast.params[:2]  # c: load's prior 0


def test_link_small_call_keeps_every_figure_as_a_full_refresh_would():
    # on_call refreshes only Link.fixed after a small call: the other figures must be
    # what a full refresh (on_reported(None) here, with no rate ever reported) gives.
    rng = random.Random(5)
    for _ in range(50):
        link = Link()
        for _ in range(rng.randint(1, 40)):
            step = rng.random()
            if step < 0.6:  # small calls, mostly
                up, down = rng.randint(0, 30_000), rng.randint(0, 30_000)
                link.on_call(up, down, rng.uniform(1e-4, 0.01), rng.uniform(0, 0.005))
            elif step < 0.8:  # large ones measure the bandwidth
                up, down = rng.choice([(10**6, 100), (100, 10**6), (10**6, 10**6)])
                link.on_call(up, down, rng.uniform(0.01, 1.0), rng.uniform(0, 0.005))
            elif step < 0.9:
                link.on_rtt(rng.uniform(1e-4, 0.01))
            else:
                link.on_probe(10**6, 0, rng.uniform(0.01, 1.0))
            figures = (link.fixed, link.up_rate, link.down_rate, link.radio_up, link.radio_down)
            link.on_reported(None)  # a full refresh of unchanged figures
            assert figures == (
                link.fixed,
                link.up_rate,
                link.down_rate,
                link.radio_up,
                link.radio_down,
            )
