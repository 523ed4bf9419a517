"""`leuko demo`: the whole chain on synthetic smears, as a new user's first run.

It runs the same code the subcommands run, inside the demo folder, so the folder ends
up laid out like a real project (dataset/, splits/, runs/latest) and the short
commands (`leuko evaluate`, `leuko predict FILE`) work there afterwards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.rule import Rule

from .app import command
from .console import console

# Small enough to finish in about a minute on two idle CPU cores, big enough to learn.
DEMO_PER_CLASS = 24
DEMO_SIBLINGS = 4
DEMO_IMG = (240, 320)


@contextmanager
def _inside(folder: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _step(title: str, shell: str, fn: Callable[[], None]) -> float:
    console.print(Rule(f"[bold]{title}[/bold]  [dim]$ {shell}[/dim]"))
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@command()
def demo(
    folder: Annotated[Path, typer.Argument(help="Working folder for the demo.")] = Path(
        "leuko-demo"
    ),
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
) -> None:
    """Run the whole chain on synthetic data: synth, dedupe, split, train, evaluate, predict,
    report."""
    from .._util.files import ensure_writable_dir

    folder = ensure_writable_dir(folder.expanduser(), "FOLDER").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with _inside(folder):
        timings = [(name, _step(title, shell, fn)) for name, title, shell, fn in _steps(epochs)]
    console.print(Rule("[bold]done[/bold]"))
    console.print("  ".join(f"{name} {seconds:.1f}s" for name, seconds in timings)
                  + f"  (total {sum(s for _, s in timings):.0f}s)")
    console.print(
        f"Try the short commands yourself: [bold]cd {folder}[/bold], then "
        "[bold]leuko evaluate[/bold] or [bold]leuko predict dataset/MONOCYTE[/bold]; open "
        "[bold]runs/latest/report.html[/bold] in a browser."
    )


def _steps(epochs: int) -> list[tuple[str, str, str, Callable[[], None]]]:
    from .dedupe import dedupe
    from .split import split
    from .synth import synth

    return [
        ("synth", "1. synthesise a stained-smear dataset",
         f"leuko synth dataset --per-class {DEMO_PER_CLASS} --siblings {DEMO_SIBLINGS} --force",
         lambda: synth(Path("dataset"), per_class=DEMO_PER_CLASS, size="240x320", seed=0,
                       siblings=DEMO_SIBLINGS, plant=True, force=True)),
        ("dedupe", "2. find duplicates and label conflicts (dry run)",
         "leuko dedupe dataset --report dedupe.json",
         lambda: dedupe(Path("dataset"), report=Path("dedupe.json"), top=5)),
        ("split", "3. split by rediscovered siblings, without the duplicates",
         "leuko split dataset --exclude dedupe.json --val 0.25 --seed 0 --force",
         lambda: split(Path("dataset"), val=0.25, seed=0, exclude=Path("dedupe.json"),
                       force=True)),
        ("train", "4. train the compact CNN (cell crop, CPU recipe)",
         f"leuko train --backbone compact --batch 16 --epochs {epochs} --seed 0",
         lambda: _train(epochs)),
        ("evaluate", "5. evaluate on the validation split", "leuko evaluate", _evaluate),
        ("predict", "6. classify one image", "leuko predict <one validation image> --top-k 2",
         _predict),
        ("report", "7. one HTML page about the run, worst mistakes with Grad-CAM",
         "leuko report", _report),
    ]


def _train(epochs: int) -> None:
    from ..training.loop import train
    from ..training.options import TrainOptions
    from .console import RichReporter
    from .train import summarize

    opts = TrainOptions(
        train_csv=str(Path("splits/train.csv").absolute()),
        val_csv=str(Path("splits/val.csv").absolute()), img_size=DEMO_IMG, batch=16,
        epochs=epochs, backbone="compact", weights="none", patience=epochs, seed=0,
    )
    summarize(train(opts, reporter=RichReporter()))


def _evaluate() -> None:
    from .evaluate import evaluate

    evaluate(None, model=Path("runs/latest"))


def _report() -> None:
    from .report import report

    report(Path("runs/latest"))


def _predict() -> None:
    import pandas as pd

    from .predict import predict

    sample = str(Path(pd.read_csv("splits/val.csv")["path"].iloc[0]).relative_to(Path.cwd()))
    predict([sample], model=Path("runs/latest"), top_k=2)
