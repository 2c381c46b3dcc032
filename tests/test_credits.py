"""Credits without a cluster: slots, the price rule, double entry, quotes, admission."""

from __future__ import annotations

import datetime
import random
import sqlite3
import time

import pytest

from edge_server.credits import (
    GRANTS,
    HOUSE,
    MICRO,
    Credits,
    account,
    cost,
    next_price,
    pieces,
    slot_of,
)
from offload.lend import Hours


def _at(day: str, hour: int, minute: int = 0) -> float:
    return time.mktime(time.strptime(f"{day} {hour:02d}:{minute:02d}", "%Y-%m-%d %H:%M"))


@pytest.fixture
def credits() -> Credits:
    clock = [_at("2026-03-02", 13)]
    ledger = Credits(sqlite3.connect(":memory:", isolation_level=None), 10 * MICRO, 4 * MICRO,
                     MICRO, clock=lambda: clock[0])  # fmt: skip
    ledger.clock_cell = clock  # type: ignore[attr-defined]
    return ledger


def test_four_six_hour_slots_and_a_run_split_at_their_edges() -> None:
    assert slot_of(_at("2026-03-02", 5, 59)) == ("2026-03-02", 0)
    assert slot_of(_at("2026-03-02", 18)) == ("2026-03-02", 3)
    split = list(pieces(_at("2026-03-02", 17, 30), _at("2026-03-03", 0, 30)))
    assert split == [
        ("2026-03-02", 2, 30 * 60_000),
        ("2026-03-02", 3, 6 * 3_600_000),
        ("2026-03-03", 0, 30 * 60_000),
    ]


def test_the_price_rule_cheaper_when_idle_dearer_when_busy_within_floor_and_ceiling() -> None:
    base = 1_000_000
    assert next_price(base, 0, base) == base // 2  # idle: half
    assert next_price(base, MICRO // 2, base) == base  # half busy: the same
    assert next_price(base, MICRO, base) == base * 3 // 2  # full: 1.5x
    assert next_price(base // 4, 0, base) == base // 4  # the floor
    assert next_price(base * 4, MICRO, base) == base * 4  # the ceiling
    assert cost(3_600_000, 0, 1000, 0) == 1000  # a core-second at 3.6 credits an hour


def test_tomorrows_prices_come_from_todays_utilization(credits: Credits) -> None:
    today = "2026-03-02"
    assert credits.prices(today) == [(4 * MICRO, MICRO)] * 4
    # Slot 2 (12-18h): 2 cores offered for 6 hours, fully used; slot 3: offered, idle.
    credits.offered(2, _at(today, 12), _at(today, 18))
    credits.charge_run("a", "b", _at(today, 12), _at(today, 18), 0, job=1)
    credits.charge_run("a", "b", _at(today, 12), _at(today, 18), 0, job=2)
    credits.offered(1, _at(today, 18), _at(today, 23))
    assert credits.utilization(today) == [0, 0, MICRO, 0]
    tomorrow = credits.prices("2026-03-03")
    assert tomorrow[2] == (6 * MICRO, MICRO * 3 // 2)
    assert tomorrow[0] == tomorrow[1] == tomorrow[3] == (2 * MICRO, MICRO // 2)


def test_the_ledger_balances_to_zero_after_a_randomized_run(credits: Credits) -> None:
    rng = random.Random(14)
    users = [f"key{i}" for i in range(5)]
    start = _at("2026-03-02", 5)
    for job in range(200):
        owner, lender = rng.choice(users), rng.choice([*users, None])
        t0 = start + rng.uniform(0, 86400)
        credits.charge_run(owner, lender, t0, t0 + rng.expovariate(1 / 30), rng.randrange(2**31),
                           job=job)  # fmt: skip
        if rng.random() < 0.1:  # a failed post must leave nothing behind
            with pytest.raises(ValueError):
                credits.post([(account(owner), -5), (account(lender or owner), 4)], "broken")
    assert credits.total() == 0
    balances = sum(credits.balance(u) for u in users)
    house = credits._sum(HOUSE)
    assert balances + house + credits._sum(GRANTS) == 0
    assert credits._sum(GRANTS) == -5 * 10 * MICRO


def test_admission_quote_and_grant(credits: Credits) -> None:
    ok, have, need = credits.afford("new")
    assert ok and have == 10 * MICRO and need == 4 * MICRO // 3600
    quote = credits.quote(3600.0)
    assert quote["micro_credits"] == 4 * MICRO and quote["slot"] == 2
    credits.post([(account("new"), -have), (HOUSE, have)], "spent it all")
    assert credits.afford("new")[0] is False


def test_lending_hours() -> None:
    night = Hours.parse("18:00-08:00")
    assert night.open_at(datetime.datetime(2026, 3, 2, 23, 0))
    assert not night.open_at(datetime.datetime(2026, 3, 2, 12, 0))
    assert night.seconds_to_change(datetime.datetime(2026, 3, 2, 7, 30)) == 30 * 60
    assert Hours.parse(None).open_at(datetime.datetime(2026, 3, 2, 12, 0))
    assert str(night) == "18:00-08:00"


def test_a_worker_is_paid_as_a_lenders_machine_only_under_its_signed_name(tmp_path) -> None:
    from edge_server.config import ServerConfig
    from edge_server.site.accounts import Accounts

    db = sqlite3.connect(tmp_path / "site.sqlite", isolation_level=None)
    accounts = Accounts(Credits(db, 0, MICRO, MICRO), ServerConfig(), dict)
    mine = accounts.credits.register("alice", "pi", 4, 0, "")
    theirs = accounts.credits.register("bob", "pi", 4, 0, "")
    name = accounts.worker_name(mine)
    assert name.startswith(f"offload-m{mine}-") and accounts.machine_of(name) == mine
    for forged in (
        f"offload-m{theirs}",  # bob's machine's id, unsigned (the name before signing)
        f"offload-m{theirs}-" + "0" * 24,
        name.replace(f"offload-m{mine}-", f"offload-m{theirs}-"),  # alice's signature on bob's id
        name[:-1],
        "offload-m-1-x",
        "offload-m" + "9" * 40,
        "tcp://10.0.0.9:40000",
    ):
        assert accounts.machine_of(forged) is None, forged
    # The signing key survives a restart: the same machine keeps its name.
    again = Accounts(Credits(sqlite3.connect(tmp_path / "site.sqlite"), 0, MICRO, MICRO),
                     ServerConfig(), dict)  # fmt: skip
    assert again.worker_name(mine) == name
