"""The READMEs' figures against the committed results, and ``python -m bench`` itself."""

from __future__ import annotations

import difflib
import re

import pytest

from . import __main__ as cli
from . import report

# A measured figure: a number with the unit of a time, a share, a ratio, an energy or a rate.
FIGURE = re.compile(
    r"(?<![\w.^])[-+~]?\d[\d,.]*(?:\s?(?:%|us|ms|s|J|KB|GB/s|MB/s|calls/s)\b|x\b|%)"
)
# Settings, not measurements: the emulated link's bucket and queue, a confidence level, Dask's
# batching interval, Ray's threshold for its object store.
SETTINGS = (
    "a 10 ms bucket and a 50 ms queue",
    "with a 99% Student-t interval",
    "intervals are 2-5 ms",
    "arrays over 100 KB",
    "the 1 MB echo runs under 50 MB/s",
)


def owned(name: str, text: str) -> str:
    """The part of a README whose figures the report owns."""
    if name == "README.md":
        return text[text.index("## Benchmarks") : text.index("## Layout")]
    return text


@pytest.mark.parametrize("name", list(report.FILES))
def test_generated_blocks_agree_with_the_results(name):
    text = (report.ROOT / name).read_text()
    assert set(report.FILES[name]) <= set(report.blocks_in(text)), "a block's markers are gone"
    generated = report.render(text, report.Results())
    diff = "".join(
        difflib.unified_diff(text.splitlines(True), generated.splitlines(True), name, "generated")
    )
    assert generated == text, f"run `python -m bench report`:\n{diff}"


@pytest.mark.parametrize("name", list(report.FILES))
def test_no_hand_written_figure_outside_the_blocks(name):
    text = report.outside_blocks(owned(name, (report.ROOT / name).read_text()))
    text = " ".join(text.split())
    for setting in SETTINGS:
        text = text.replace(setting, "")
    assert FIGURE.findall(text) == [], "a measured figure outside a generated block"


def test_a_changed_figure_or_result_is_caught():
    text = (report.ROOT / "README.md").read_text()
    results = report.Results()
    block = re.search(r"<!-- bench:load -->\n(.*?)<!-- /bench:load -->", text, re.S)
    assert block is not None
    broken = text.replace(block.group(1), block.group(1).replace(" answered", "1 answered", 1))
    assert report.render(broken, results) != broken
    results["load"]["steady"]["calls_per_s"] += 1000  # the results changed, the text did not
    assert report.render(text, results) != text


def test_bench_help_lists_every_benchmark(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for name, summary in cli.BENCHMARKS.items():
        assert re.search(rf"^\s+{name}\s", out, re.M) and summary.split()[0] in out


@pytest.mark.parametrize("name", list(cli.BENCHMARKS))
def test_a_benchmark_s_help_runs_nothing(name, capsys, monkeypatch, tmp_path):
    module = __import__(f"bench.{name}", fromlist=["main"])
    if hasattr(module, "RESULTS"):
        monkeypatch.setattr(module, "RESULTS", tmp_path)  # anything written would land here
    with pytest.raises(SystemExit) as stop:
        cli.main([name, "--help"])
    assert stop.value.code == 0
    assert "usage: python -m bench " + name in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
