"""``python -m bench report``: the figures of README.md and bench/README.md, from the results.

Every measured figure the two READMEs quote sits between markers::

    <!-- bench:NAME -->
    ...generated text...
    <!-- /bench:NAME -->

and is written here from the results files the benchmarks wrote and the repository
commits (``bench/results/*.json``). ``python -m bench report`` rewrites those blocks
and nothing else; ``--check`` only says whether they are current (exit status 1 if
not). ``bench/test_report.py`` fails when a block and its results disagree.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys

# Importing the block modules registers their blocks.
from . import report_dcof  # noqa: F401
from .report_calls import drop_rates
from .report_servers import servers_results
from .report_text import BLOCKS, ROOT, Results, block, change, dec, num, pct, span, whole, wrap

MARKER = re.compile(r"(<!-- bench:([a-z0-9-]+) -->\n)(.*?)(<!-- /bench:\2 -->)", re.S)

# The blocks each file must hold (so a figure cannot leave its block unnoticed).
FILES = {
    "README.md": [
        "overhead",
        "decisions",
        "decisions-servers",
        "djos",
        "failures",
        "load",
        "abuse",
        "fleet",
        "dcof",
        "peers",
    ],
    "bench/README.md": ["dcof-run", "peers-run", "latest"],
}


# -- bench/README.md's summary of the others ------------------------------------------------


def _latest_servers(r: Results) -> list[str]:
    """The three-server decisions line of ``latest`` (none before that bench has run)."""
    name = servers_results(r)
    if name is None:
        return []
    d, pol = r[name], r[name]["policies"]
    return [
        f"- **decisions over three servers** (`{name}.json`, {d['calls']} calls): time / oracle "
        f"{pol['always_local']['time_ratio_to_oracle']:.2f} always local, "
        f"{pol['nearest']['time_ratio_to_oracle']:.2f} nearest server, "
        f"{pol['random_server']['time_ratio_to_oracle']:.2f} random server, "
        f"{pol['ours']['time_ratio_to_oracle']:.2f} ours (time objective); energy / oracle "
        f"{pol['ours_energy']['energy_ratio_to_oracle']:.2f} for ours with the energy objective."
    ]


@block("latest")
def latest(r: Results) -> str:
    o, d, j, f, ld = r["overhead"], r["decisions"], r["djos"], r["failures"], r["load"]
    n = o["noop_blocks"]
    big = o["echo_128MB"]
    ours_t = d["policies"]["ours"]
    ours_e = d["policies"]["ours_energy"]
    pol = d["policies"]
    ex = j["motivating_example"]
    series = [j["one_slot"], j["three_slot"]]
    savings = [row["djos_saving_vs_lfos"] for s in series for row in s["by_lambda"]]
    drops = [x for s in series for x in drop_rates(s, "djos")]
    m_drops = [x["max_drop_rate"] for s in series for x in s["by_M"]["runs"]]
    cases = f["cases"]
    hardest = max(c["mu"] for c in cases)
    at_hardest = [c for c in cases if c["mu"] == hardest]
    scratch = next((c for c in at_hardest if c["checkpoints"] == 0), None)
    most = max(at_hardest, key=lambda c: c["checkpoints"])
    s, k = ld["steady"], ld["sigkill"]
    lines = [
        "- **overhead** (`overhead.json`, one run): a no-op call's p50 is "
        f"{n['p50_ratio']:.1f}x a raw pyzmq round trip (offload {n['offload_p50_us']:.0f} us, "
        f"raw {n['raw_p50_us']:.0f} us; rounds {n['p50_ratio_range'][0]:.1f}x-"
        f"{n['p50_ratio_range'][1]:.1f}x): a call crosses three processes (client, server, "
        "worker) where the raw echo crosses two. A 128 MB echo runs at "
        f"{pct(big['throughput_ratio'], 0)} of raw ({big['offload_MBps'] / 1000:.1f} GB/s).",
        f"- **decisions** (`decisions.json`, {d['calls']} calls"
        f"{'' if d['size'] == 'full' else ', `--quick`'}): time / oracle is "
        f"{pol['always_local']['time_ratio_to_oracle']:.2f} always local, "
        f"{pol['always_remote']['time_ratio_to_oracle']:.2f} always remote, "
        f"{pol['dcof_rule']['time_ratio_to_oracle']:.2f} DCOF's rule, "
        f"{ours_t['time_ratio_to_oracle']:.2f} ours (time objective); energy / oracle "
        f"{ours_e['energy_ratio_to_oracle']:.2f} for ours with the energy objective."
        + (
            " A live `auto` client chose as the replay did for "
            f"{pct(d['live']['agreement_with_replayed_choices'], 0)} of the calls."
            if d.get("live")
            else ""
        ),
        *_latest_servers(r),
        f"- **djos** (`djos.json`): the motivating example (LFOS {dec(ex['LFOS'])}, EFOS "
        f"{dec(ex['EFOS'])}, DJOS {dec(ex['DJOS'])} J per user per slot); in simulation DJOS uses "
        f"{span(savings, whole)}% less energy than LFOS with every drop "
        f"rate {span(drops, lambda x: f'{x:.3f}')} at M = {series[0]['M']:g} (bound "
        f"{series[0]['rho']:g}; {span(m_drops, lambda x: f'{x:.3f}')} across the M sweep)"
        + (
            f"; live, DJOS {j['live']['djos']['energy_per_item_j']:.3f} J per item against "
            f"LFOS {j['live']['lfos']['energy_per_item_j']:.3f} J "
            f"({change(j['live']['djos_saving_vs_lfos'], 0)})."
            if j.get("live")
            else "."
        ),
        "- **failures** (`failures.json`): "
        + (
            "every finished case returned the exact result"
            if all(c["correct"] for c in cases if c["finished"])
            else "NOT every finished case returned the exact result"
        )
        + f"; at mu {hardest:g} retrying from scratch "
        + (
            "was not run"
            if scratch is None
            else f"finished in {scratch['completion_s']:.1f} s"
            if scratch["finished"]
            else f"never finished within {f['cap']:g}x the job"
        )
        + f", {most['checkpoints']} checkpoints "
        + (
            f"finished in {most['completion_s']:.1f} s with {most['redone_s']:.1f} s of work "
            "redone."
            if most["finished"]
            else "did not finish."
        ),
        f"- **load** (`load.json`): {num(s['answered'])} calls answered, {s['lost']} lost, "
        f"{s['duplicates']} duplicated, {s['wrong_values']} wrong; {num(s['calls_per_s'])} "
        f"calls/s, p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms with {s['clients']} calls "
        f"in flight. Killed with SIGKILL after {pct(k['killed_at'], 0)} of the calls and "
        f"restarted on the same job store: of the {k['unavailable']} calls in flight, "
        f"{k['recovered']} waiting calls ran after the restart with "
        f"{'correct' if k['recovered_correct'] else 'WRONG'} kept results, "
        f"{k.get('interrupted', k.get('failed_running'))} were running at the kill, "
        f"{k['failed_unstored']} "
        f"{'was' if k['failed_unstored'] == 1 else 'were'} not yet written, "
        f"{k['reply_lost_or_never_arrived']} had their reply lost or never arrived; "
        + (
            "none ran twice."
            if k["duplicates"] + k["recovered_also_answered"] == 0
            else f"{k['duplicates'] + k['recovered_also_answered']} ran twice."
        ),
    ]
    return "\n".join(lines) + "\n"


# -- the files ----------------------------------------------------------------------------


def render(text: str, results: Results) -> str:
    """``text`` with every block regenerated from ``results``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in BLOCKS:
            raise KeyError(f"unknown block bench:{name}")
        return match.group(1) + wrap(BLOCKS[name](results)) + match.group(4)

    return MARKER.sub(replace, text)


def blocks_in(text: str) -> list[str]:
    return [m.group(2) for m in MARKER.finditer(text)]


def outside_blocks(text: str) -> str:
    """``text`` with the blocks' contents removed (what is left is hand-written)."""
    return MARKER.sub(lambda m: m.group(1) + m.group(4), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench report",
        description="Rewrite the generated figure blocks (<!-- bench:NAME --> ... "
        "<!-- /bench:NAME -->) of README.md and bench/README.md from bench/results/*.json.",
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a block is out of date"
    )
    opts = parser.parse_args(argv)
    results = Results()
    stale = 0
    for name, expected in FILES.items():
        path = ROOT / name
        text = path.read_text()
        missing = [b for b in expected if b not in blocks_in(text)]
        if missing:
            print(f"{name}: no block for {', '.join(missing)}", file=sys.stderr)
            stale += 1
        new = render(text, results)
        if new == text:
            continue
        if opts.check:
            stale += 1
            sys.stdout.writelines(
                difflib.unified_diff(
                    text.splitlines(True), new.splitlines(True), name, f"{name} (generated)"
                )
            )
        else:
            path.write_text(new)
            print(f"{name}: rewritten")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
