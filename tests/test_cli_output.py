"""What the command-line tools print: a help text for every flag, fes-eval's summary table and JSON file."""
from __future__ import annotations

import argparse
import json

import pytest

from conftest import DATA, need


def parsers_of(argv_main) -> list[argparse.ArgumentParser]:
    """Every parser a command builds for `--help` (subcommands included), caught as it prints its help."""
    seen = []
    real = argparse.ArgumentParser.print_help
    argparse.ArgumentParser.print_help = lambda self, file=None: seen.append(self)
    try:
        with pytest.raises(SystemExit):
            argv_main()
    finally:
        argparse.ArgumentParser.print_help = real
    out = []
    while seen:
        p = seen.pop()
        out.append(p)
        seen += [sp for a in p._actions if isinstance(a, argparse._SubParsersAction) for sp in a.choices.values()]
    return out


def commands():
    from fes_live.benchmarks.run import BENCHMARKS
    from fes_live.benchmarks.run import main as bench
    from fes_live.stream.cli import COMMANDS
    from fes_live.stream.cli import main as live
    from fes_live.stream.events_cli import main as events
    from fes_live.train.evaluate import main as evaluate
    from fes_live.train.export import main as export
    from fes_live.train.synth import main as synth
    from fes_live.train.train import main as train
    yield from ((f"fes-live {c}", lambda c=c: live([c, "--help"])) for c in COMMANDS)
    yield from ((f"fes-bench {b}", lambda b=b: bench([b, "--help"])) for b in BENCHMARKS)
    for name, fn in (("fes-events", events), ("fes-eval", evaluate), ("fes-export", export), ("fes-synth", synth),
                     ("fes-train", train)):
        yield name, lambda fn=fn: fn(["--help"])


def test_every_flag_has_a_help_text():
    missing, checked = {}, set()
    for name, run in commands():
        for p in parsers_of(run):
            checked.add(p.prog)
            bare = [a.option_strings[-1] for a in p._actions if a.option_strings and not a.help]
            if bare:
                missing[p.prog] = bare
    assert len(checked) >= 16, checked  # every command and subcommand was looked at
    assert missing == {}


def test_eval_prints_a_table_and_writes_the_json(tmp_path, capsys):
    from fes_live.train.evaluate import main
    base = DATA / "megc2020_baseline"
    args = ["megc2020", "--gt", str(need(base / "ground_truth_all_Info.txt")), "--pred-dir", str(base / "predictions"),
            "--micro-len", "7:16", "--macro-len", "17:"]
    assert main(args + ["--json", str(tmp_path / "r" / "megc.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) < 10, out  # a table, not 233 lines of JSON
    assert out[0] == "MEGC spotting F1 (megc-official, 98 videos)"
    assert out[4].split() == ["overall", "6558", "357", "130", "0.0198", "0.3641", "0.0376"]
    assert json.loads((tmp_path / "r" / "megc.json").read_text())["overall"]["tp"] == 130
