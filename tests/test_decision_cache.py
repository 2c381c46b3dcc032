"""The decider's cache of the last function decided: it changes no decision.

``decide`` keeps the last function object and its profile (``fn.key`` is a
property, a tenth of a decision). What is learned between two decisions, and
decisions of other functions or of another wrapper of the same function, must
lead to exactly the decisions made without it.
"""

from __future__ import annotations

import offload
from offload.profiler import AdaptiveDecider, DeviceState, Profiler
from offload.profiler import decision as decision_module


def _work(n: int) -> int:
    return n


def _other(n: int) -> int:
    return n + 1


def make() -> AdaptiveDecider:
    decider = AdaptiveDecider(Profiler(profile_cache=None))
    decider.profiler.device.state = DeviceState()  # a quiet, plugged-in device
    return decider


def decided(decider, fn, size=1000):
    """What the next decision weighs (its explanation, estimates), then the decision."""
    why = decider.explain(fn, (size,), {}, True)
    return why, decider.costs(fn, size), decider.decide(fn, (size,), {}, True)[0]


def test_an_observation_changes_the_next_decision_as_without_the_cache():
    fn = offload.offload(_work, size=lambda n: n)
    cached, fresh = make(), make()
    for d in (cached, fresh):
        d.observe_local(fn, 1000, 0.05)
        d.observe_remote(fn, 1000, 0.02, 0.01, 1000, 100)
    assert decided(cached, fn)[-1] == "remote"  # cached from here on
    for d in (cached, fresh):
        d.observe_remote(fn, 1000, 0.5, 0.49, 1000, 100)  # the server got slow
        d.observe_remote(fn, 1000, 0.5, 0.49, 1000, 100)
    fresh.decide(fn, (1000,), {}, True)  # the same clock on both
    fresh.decide(offload.offload(_other), (1,), {}, True)  # its next decision looks fn up
    assert decided(cached, fn) == decided(fresh, fn)
    assert decided(cached, fn)[-1] == "local"


def test_wrappers_and_other_functions_share_or_keep_their_own_profiles():
    one, again = (offload.offload(_work, size=lambda n: n) for _ in range(2))
    other = offload.offload(_other, size=lambda n: n)
    d = make()
    for fn in (one, again, other, one):
        d.decide(fn, (1000,), {}, True)
    assert d.profile(one) is d.profile(again)  # one function: one profile
    assert d.profile(one).clock == 3 and d.profile(other).clock == 1


def test_a_profile_pushed_out_comes_back_on_the_next_decision(monkeypatch):
    monkeypatch.setattr(decision_module, "MAX_PROFILES", 1)
    one, other = offload.offload(_work), offload.offload(_other)
    d = make()
    d.decide(one, (1000,), {}, True)
    d.decide(other, (1000,), {}, True)  # pushes one's profile out of memory
    d.decide(one, (1000,), {}, True)
    assert list(d._profiles) == [one.key]
    assert d.profile(one).clock == 2  # the store kept what it learned


def test_the_last_function_is_kept_weakly_and_need_not_take_weak_references():
    import gc
    import weakref

    class Holder:
        def value(self, n: int) -> int:
            return n

    d = make()
    holder = Holder()
    ref = weakref.ref(holder)
    d.decide(offload.offload(holder.value), (1000,), {}, True)
    del holder
    gc.collect()
    assert ref() is None  # neither the wrapper nor its bound method's instance kept

    class Bare:  # a function-like object without weak references: decided, not kept
        __slots__ = ("key", "size", "wire_name")

    bare = Bare()
    bare.key, bare.size, bare.wire_name = "bare@0", None, "bare"
    for _ in range(2):
        d.decide(bare, (1000,), {}, True)
    assert d.profile(bare).clock == 2
