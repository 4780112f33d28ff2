"""The README's walkthrough, run in order as a user would (tiny budgets, a small real data slice),
and every `ecgsearch` command the README shows parses with the real CLI."""

from __future__ import annotations

import csv
import re
import shlex
from pathlib import Path

import torch

from search.cli import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = (README, REPO / "docs" / "DEPLOY.md")


def readme_commands(text: str) -> list[list[str]]:
    """Every `ecgsearch …` line inside the README's code blocks, split like a shell would."""
    commands = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("ecgsearch "):
                commands.append(shlex.split(line)[1:])
    return commands


def walkthrough(text: str) -> list[list[str]]:
    block = text.split("<!-- walkthrough -->", 1)[1].split("<!-- /walkthrough -->", 1)[0]
    return readme_commands(block)


def test_every_documented_command_parses(parse_command, monkeypatch):
    monkeypatch.delenv("ECGSEARCH_STORAGE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    commands = [argv for doc in DOCS for argv in readme_commands(doc.read_text())]
    assert len(commands) >= 12
    assert {argv[0] for argv in commands} >= {"data", "start", "worker", "status", "report", "retrain", "predict"}
    for argv in commands:
        command, _params = parse_command(argv)  # click's UsageError on an unknown command or flag, or a bad value
        assert command.split()[0] == argv[0]


def shrink(argv: list[str], *, raw: Path, slice_dir: Path) -> list[str]:
    """The same command with a small real slice and tiny budgets, so it runs in seconds on a CPU."""
    replacements = {
        "../shared/data/mitdb": str(raw),
        "data/mitdb/X_test.pt": str(slice_dir / "X_test.pt"),
        "data/mitdb/groups_test.pt": str(slice_dir / "groups_test.pt"),
    }
    argv = [replacements.get(arg, arg) for arg in argv]
    if argv[0] == "start":
        argv[argv.index("--data") + 1] = str(slice_dir)
        argv[argv.index("--trials") + 1] = "2"
        argv[argv.index("--epochs") + 1] = "2"
        if "--cv" in argv:
            argv[argv.index("--cv") + 1] = "2"  # the tiny slice holds few patients
        argv += ["--no-progress", "--max-params", "150000"]
    if argv[0] == "retrain" and "--seeds" in argv:
        argv[argv.index("--seeds") + 1] = "2"
    return argv


def test_readme_walkthrough_runs_in_order(mitdb_raw_dir, tiny_real_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ECGSEARCH_STORAGE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    steps = walkthrough(README.read_text())
    assert [argv[0] for argv in steps] == ["data", "data", "start", "status", "report", "retrain", "predict"]
    for argv in steps:
        assert main(shrink(argv, raw=mitdb_raw_dir, slice_dir=tiny_real_dir)) == 0, argv

    assert (tmp_path / "data" / "mitdb" / "meta.json").exists()
    assert (tmp_path / "ecgsearch.db").exists() and (tmp_path / "mlflow.db").exists()
    assert "plotly" in (tmp_path / "report.html").read_text()
    bundle = tmp_path / "exports" / "cnn"
    for name in ("model.pt", "model.onnx", "config.json", "metrics.json", "README.md"):
        assert (bundle / name).exists(), name
    with open(tmp_path / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(torch.load(tiny_real_dir / "X_test.pt", weights_only=True))
