"""A small load run: many clients at once, every call answered exactly once."""

from __future__ import annotations

from . import load


def test_every_call_is_answered_exactly_once():
    report = load.run(clients=8, calls=10)
    assert report["answered"] == 80
    assert report["duplicates"] == report["lost"] == report["wrong_values"] == 0
    assert report["other_errors"] == [] and report["server_busy"] == 0


def test_queued_calls_survive_a_sigkill_mid_load():
    report = load.run(clients=8, calls=30, kill_at=0.4)
    assert report["unavailable"] >= 1  # the kill came mid-load
    assert report["answered"] + report["unavailable"] == 240
    assert report["recovered_correct"] and report["recovered_also_answered"] == 0
    assert report["duplicates"] == report["wrong_values"] == 0
    assert report["other_errors"] == [] and report["store_other_failures"] == {}
    # Every call is accounted for: answered, recovered from the store, recorded interrupted
    # by the restarted server, or lost (neither an answer nor anything in the store).
    settled = report["recovered"] + report["interrupted"] + report["failed_unstored"]
    assert report["answered"] + settled + report["lost"] == 240
    assert report["lost"] == report["reply_lost"] + report["never_stored"]
    assert report["lost"] <= report["unavailable"] - report["recovered"]
    assert "| answered |" in load.markdown({"steady": report, "sigkill": report})


def _part(seen=(), unavailable=(), busy=(), wrong=()):
    return {
        "seen": list(seen),
        "unavailable": list(unavailable),
        "busy": list(busy),
        "wrong": list(wrong),
    }


def test_a_call_is_lost_only_with_no_answer_and_nothing_in_the_store():
    expected = {(0, i) for i in range(6)}
    parts = [
        _part(
            seen=[(0, 0)],
            busy=[(0, 1)],  # refused: an answer
            unavailable=[(0, 2), (0, 3), (0, 4), (0, 5)],
        )
    ]
    store = {
        "recovered": [(0, 2)],  # its kept result, run after the restart
        "interrupted": 1,  # one recorded interrupted at the restart
        "failed_unstored": 0,
        "done_not_kept": 2,  # (0, 0) answered, and one more ran with its reply lost
        "other_failures": {},
    }
    report = load.account(expected, parts, store)
    assert report["lost"] == 2 and report["reply_lost"] == 1 and report["never_stored"] == 1
    assert report["recovered_correct"] and report["server_busy"] == 1
    # Without a kill nothing is excused: a call that got no value is lost.
    steady = load.account(expected, [_part(seen=[(0, i) for i in range(5)])], None)
    assert steady["lost"] == 1 and "unavailable" not in steady
    failed = [(0, 5, "WorkerCrashed", "WorkerCrashed('x')")]
    other = load.account(expected, [_part(seen=[(0, i) for i in range(5)], wrong=failed)], None)
    assert other["lost"] == 0 and other["errors_by_class"] == {"WorkerCrashed": 1}
