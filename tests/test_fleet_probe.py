"""Many servers: each server's link is measured before calls are chosen by it (real servers).

A server no call went to yet is ranked by a bandwidth probe (:mod:`offload.probing`),
not by the figure assumed for every link; a server lost and back is probed again; a
PING sent while a server is lost does not time the RTT (it would time its absence).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import offload
from offload.config import Config
from offload.probing import CHANGED, PROBE_BYTES
from offload.profiler import Link
from offload.remote import Remote


def _until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.05)


def test_every_server_is_probed_both_ways_before_the_first_choice_and_once(server, make_server):
    other = make_server()
    addresses = [server.address, other.address]
    with offload.Client(servers=addresses, mode="auto", profile_cache="") as client:
        first = client.servers.candidates()  # what the first call waits for
        assert first
        for c in first:  # (a server whose workers still start is left out, probed later)
            assert c.link.up_bps.mean is not None, "ranked by a measured uplink"
            assert c.link.down_bps.mean is not None, "and downlink"
            assert c.link.snapshot()["up_bps"] != c.link.prior_bps
        _until(lambda: len(client.servers.candidates()) == 2)
        candidates = client.servers.candidates()
        _until(lambda: all(c.link.down_bps.mean is not None for c in candidates))
        assert all(c.link.up_bps.mean is not None for c in candidates)
        ups = {c.address: c.link.up_bps.count for c in candidates}
        time.sleep(1.0)  # a few watcher steps: each link is probed once, not again
        assert {c.address: c.link.up_bps.count for c in candidates} == ups


def test_a_lost_server_is_probed_again_once_it_is_usable(server, make_server):
    other = make_server()
    settings = {"mode": "auto", "profile_cache": "", "probation": 0.2}
    with offload.Client(servers=[server.address, other.address], **settings) as client:
        usable = client.servers.usable
        assert usable is not None
        client.servers.candidates()
        _until(lambda: any(c.address == other.address for c in usable.candidates))
        link = next(c.link for c in usable.candidates if c.address == other.address)
        _until(lambda: link.down_bps.mean is not None)
        probed = link.up_bps.count
        usable.lose(other.address)  # it answers all along: back after its probation
        _until(lambda: any(c.address == other.address for c in usable.candidates))
        _until(lambda: link.up_bps.count > probed)


def test_a_ping_sent_while_the_server_is_lost_does_not_time_the_rtt(server):
    remote = Remote(Config(server=server.address, profile_cache=""), Link())
    try:
        remote.ping().result(10)  # connects (not timed: nothing answered yet)
        assert remote.link.rtt.count == 0
        remote.conn.up = False  # as when it lost a call
        remote.ping().result(10)
        assert remote.link.rtt.count == 0, "its absence is not a round trip"
        assert remote.conn.up is True  # it answered: the next PING is timed
        remote.ping().result(10)
        assert remote.link.rtt.count == 1
    finally:
        remote.close()


def test_a_link_one_slow_call_stepped_is_probed_again_and_undone(server, make_server):
    other = make_server()
    with offload.Client(servers=[server.address, other.address], profile_cache="") as client:
        client.servers.candidates()
        usable = client.servers.usable
        assert usable is not None
        _until(lambda: len(usable.candidates) == 2)
        link = usable.candidates[0].link
        _until(lambda: link.down_bps.mean is not None)
        measured, size = link.up_rate, 10 * PROBE_BYTES
        # Two calls at the measured rate, the watcher looking after each (every 50 ms): the
        # prober notes what its round left at its first look after the round, which may come
        # after the first call; by the second, calls measure this link either way.
        for _ in range(2):
            link.on_call(up=size, down=0, turnaround=link.fixed + size / measured, server=0.0)
            time.sleep(0.5)
        link.on_call(up=size, down=0, turnaround=20.0, server=0.0)  # a hiccup
        stepped = link.up_rate
        assert stepped < measured / CHANGED, "one call moved the estimate by a step"
        # The probe undid it: a step back up (not back to ``measured``: a loopback probe's
        # rate varies 4 MB/s to 300 MB/s from one to the next with the machine's load).
        _until(lambda: link.up_rate > stepped * CHANGED)


def test_a_call_with_only_a_plain_ping_beside_it_is_alone_on_its_link(make_server):
    """The fleet watcher PINGs servers while calls run; a PING carries no probe bytes and
    shares no link time with the call, so the call still teaches its link (it is alone),
    as a probe beside it would not let it. The server is stopped (SIGSTOP) while the
    PING and the call are sent, so the PING is in flight when the call leaves."""
    import os
    import signal
    from concurrent.futures import Future

    from tests import apps

    server = make_server()
    remote = Remote(Config(server=server.address, profile_cache=""), Link())
    try:
        remote.ping().result(10)
        outcomes = []
        for beside in ({}, {"up": PROBE_BYTES}):
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                pinged = remote.ping(**beside)
                future: Future = Future()
                remote.send(apps.add, (1, 2), {}, future, wait=False)
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            pinged.result(10)
            outcomes.append(future.result(10).alone)
        assert outcomes == [True, False]
    finally:
        remote.close()
