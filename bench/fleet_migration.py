"""bench fleet's migration scenario (issue 13, item 7): a running job whose server slows down.

A checkpointed job (:func:`bench.fleet_app.steps`: ``steps`` steps of
``step_s``, a checkpoint of ``state_kb`` KB offered after each, taken every
0.2 s) runs on the server the client's choice picks among the three of
:class:`bench.fleet.Fleet`. Once a quarter of it is done, that server slows
down (another tenant takes its CPU: each step there is
:data:`~bench.fleet_app.SLOWED` times slower from then on). Runs, each from a
cold client, ``mode="remote"``:

* ``never``: ``migrate="never"`` (the default until this bench showed ``auto``
  wins): the job stays, slowed;
* ``auto``: ``migrate="auto"``: the job moves when the gain predicted from
  its paces exceeds the cost of moving its last checkpoint over the target's
  shaped link (:mod:`offload.migration`);
* ``unslowed``: no slowdown at all: the lower bound a perfect move approaches;
* ``auto unslowed``: ``migrate="auto"`` with no slowdown: what ``auto`` costs
  when nothing changes (a move then is a mistake).

Reported: seconds per run (mean of ``repeats``), the gain ``never / auto``,
``auto / unslowed``, and each move (from, to).
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from statistics import mean
from typing import TYPE_CHECKING, Any

import offload

from .fleet_app import SLOWED, steps

if TYPE_CHECKING:
    from .fleet_setup import Fleet

FULL = {"steps": 80, "step_s": 0.05, "state_kb": 32, "repeats": 3}
QUICK = {"steps": 40, "step_s": 0.05, "state_kb": 32, "repeats": 1}
RUNS = ("unslowed", "auto unslowed", "never", "auto")


def run_once(fleet: Fleet, client_settings: dict[str, Any], how: str, opts: dict[str, Any]) -> dict:
    """One job under ``how`` (one of :data:`RUNS`): seconds, where it started, its moves."""
    names = {address: name for name, address in fleet.address.items()}
    migrate = "auto" if how.startswith("auto") else "never"
    settings = {**client_settings, "mode": "remote", "migrate": migrate}
    with (
        tempfile.TemporaryDirectory() as slow,
        offload.Client(servers=list(fleet.address.values()), **settings) as client,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", RuntimeWarning)  # each move is logged, and kept below
        deadline = time.monotonic() + 15
        while len(client.servers.candidates()) < len(fleet.address):  # all of them answer
            assert time.monotonic() < deadline, "not every server answered"
            time.sleep(0.05)
        n = opts["steps"]
        start = time.perf_counter()
        job = client.submit(steps, n, opts["step_s"], opts["state_kb"] * 1024, slow)
        assert isinstance(job, offload.Job)
        while job.progress.done < n // 4 and not job.done():
            time.sleep(0.005)
        first = names.get(job.progress.where, job.progress.where)
        if not how.endswith("unslowed"):
            (Path(slow) / str(fleet.servers[first].process.pid)).touch()
        assert job.result(timeout=120) == n
        took = time.perf_counter() - start
        moves = [[names[m.source], names[m.target]] for m in client.router.migrations.moves]
    return {"s": took, "started_on": first, "moves": moves, "runs": job.progress.runs}


def run(fleet: Fleet, client_settings: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Every run of :data:`RUNS`, ``repeats`` times each (interleaved); the summary."""
    opts = dict(QUICK if quick else FULL)
    samples: dict[str, list[dict[str, Any]]] = {how: [] for how in RUNS}
    for _ in range(opts["repeats"]):
        for how in RUNS:
            fleet.reset()
            samples[how].append(run_once(fleet, client_settings, how, opts))
            print(f"migration {how}: {samples[how][-1]}")
    seconds = {how: mean(s["s"] for s in runs) for how, runs in samples.items()}
    return {
        "setup": {**opts, "slowed": SLOWED, "slowed_after": 0.25, "checkpoint_every_s": 0.2},
        "seconds": seconds,
        "gain": seconds["never"] / seconds["auto"],
        "auto_to_unslowed": seconds["auto"] / seconds["unslowed"],
        "auto_unslowed_to_unslowed": seconds["auto unslowed"] / seconds["unslowed"],
        "needless_moves": sum(len(r["moves"]) for r in samples["auto unslowed"]),
        "runs": samples,
    }


def markdown(m: dict[str, Any] | None) -> str:
    """The migration section of ``fleet.md``."""
    if m is None:
        return "Migration: not measured in this run.\n"
    s, setup = m["seconds"], m["setup"]
    moves = sorted({" -> ".join(move) for r in m["runs"]["auto"] for move in r["moves"]})
    calm = (
        f" With no slowdown, `auto` took {m['auto_unslowed_to_unslowed']:.2f}x the time of "
        f"`never` and moved {m['needless_moves']} time(s)."
        if "needless_moves" in m
        else ""
    )
    lines = [
        f"Migration: a checkpointed job of {setup['steps']} steps of "
        f"{setup['step_s'] * 1000:g} ms ({setup['state_kb']} KB checkpoints every "
        f"{setup['checkpoint_every_s']:g} s) whose server becomes {setup['slowed']:g}x slower "
        f"once {setup['slowed_after']:.0%} is done; mean of {setup['repeats']}.",
        "",
        "| run | time (s) |",
        "|---|---|",
        *(f"| {how} | {s[how]:.2f} |" for how in RUNS if how in s),
        "",
        f'Gain of `migrate="auto"`: {m["gain"]:.2f}x faster than `never`; '
        f"{m['auto_to_unslowed']:.2f}x the unslowed run. "
        f"Moves: {', '.join(moves) or 'none'}.{calm}",
    ]
    return "\n".join(lines) + "\n"
