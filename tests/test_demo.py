"""`leuko demo` is the README's first command: the whole chain must run, and leave a
folder in which the short commands work."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import invoke


def test_demo_runs_the_chain_and_leaves_a_project_folder(tmp_path: Path) -> None:
    run = invoke("demo", str(tmp_path / "demo"), "--epochs", "1")
    assert run.code == 0, run.output
    demo = tmp_path / "demo"
    for step in ("synth", "dedupe", "split", "train", "evaluate", "predict", "report"):
        assert step in run.stdout
    assert (demo / "splits" / "train.csv").is_file() and (demo / "dedupe.json").is_file()
    latest = demo / "runs" / "latest"
    meta = json.loads((latest / "leuko.json").read_text())
    assert meta["status"] == "finished" and meta["epochs_done"] == 1
    metrics = json.loads((latest / "metrics.json").read_text())
    assert metrics["n"] > 0 and 0.0 <= metrics["accuracy"] <= 1.0
    html = (latest / "report.html").read_text()
    assert html.lower().startswith("<!doctype html>") and "http://" not in html.split("<body")[0]
    # the short commands work inside it afterwards
    again = invoke("evaluate", "--json", "again.json", cwd=demo)
    assert again.code == 0, again.output
    assert json.loads((demo / "again.json").read_text())["n"] == metrics["n"]
