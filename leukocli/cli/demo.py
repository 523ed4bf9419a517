"""`leuko demo`: the whole chain on synthetic smears, as a new user's first run.

It calls the same functions the subcommands call, inside the demo folder, so the
folder ends up laid out like a real project (dataset/, splits/, runs/latest) and the
short commands (`leuko evaluate`, `leuko predict FILE`) work there afterwards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.rule import Rule

from .console import console

# Small enough to finish in about three minutes on two CPU cores, big enough to learn.
DEMO_PER_CLASS = 24
DEMO_SIBLINGS = 4
DEMO_IMG = "240x320"


@contextmanager
def _inside(folder: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _step(title: str, command: str, fn: Callable[[], None]) -> float:
    console.print(Rule(f"[bold]{title}[/bold]  [dim]$ {command}[/dim]"))
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_demo(folder: Path, epochs: int = 10) -> None:
    """Synthesise, dedupe, split, train, evaluate and predict inside `folder`."""
    from .dedupe import run_dedupe_cli
    from .evaluate import run_evaluate_cli
    from .predict import run_predict_cli
    from .split import run_split_cli
    from .synth import run_synth_cli
    from .train import run_train_cli

    folder = folder.expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    timings: list[tuple[str, float]] = []
    with _inside(folder):
        data = Path("dataset")
        timings.append((
            "synth",
            _step(
                "1. synthesise a stained-smear dataset",
                f"leuko synth dataset --per-class {DEMO_PER_CLASS} --siblings {DEMO_SIBLINGS}",
                lambda: run_synth_cli(
                    out=data, per_class=DEMO_PER_CLASS, size="240x320", seed=0,
                    siblings=DEMO_SIBLINGS, plant=True, force=True,
                ),
            ),
        ))
        timings.append((
            "dedupe",
            _step(
                "2. find duplicates and label conflicts (dry run)",
                "leuko dedupe dataset --report dedupe.json",
                lambda: run_dedupe_cli(
                    data=data, threshold=10, transforms=True, report=Path("dedupe.json"),
                    apply=False, quarantine=None, undo=None, top=5,
                ),
            ),
        ))
        timings.append((
            "split",
            _step(
                "3. split by rediscovered siblings, without the duplicates",
                "leuko split dataset --exclude dedupe.json --val 0.25 --force",
                lambda: run_split_cli(
                    data=data, out=Path("splits"), val=0.25, test=0.0, seed=0,
                    group_by="auto", exclude=Path("dedupe.json"), force=True,
                ),
            ),
        ))
        timings.append((
            "train",
            _step(
                "4. train the compact CNN (cell crop, CPU recipe)",
                f"leuko train --backbone compact --batch 16 --epochs {epochs}",
                lambda: run_train_cli(
                    train_csv=Path("splits/train.csv"), val_csv=Path("splits/val.csv"),
                    img=DEMO_IMG, batch=16, epochs=epochs, lr=1e-3, backbone="compact",
                    weights="none", unfreeze=0, augment=True, class_weights="auto",
                    patience=epochs, precision="auto", strategy="auto", seed=0,
                    out=None, resume=False,
                ),
            ),
        ))
        timings.append((
            "evaluate",
            _step(
                "5. evaluate on the validation split",
                "leuko evaluate",
                lambda: run_evaluate_cli(
                    data=None, model=Path("runs/latest"), json_path=None, out=None, batch=64,
                    group_by=None, mapping=[], ignore_unknown=False,
                ),
            ),
        ))
        sample = _first_val_image(Path("splits/val.csv"))
        timings.append((
            "predict",
            _step(
                "6. classify one image",
                f"leuko predict {sample}",
                lambda: run_predict_cli(
                    paths=[sample], model=Path("runs/latest"), top_k=2, fmt="table", batch=64
                ),
            ),
        ))
    console.print(Rule("[bold]done[/bold]"))
    console.print(
        "  ".join(f"{name} {seconds:.1f}s" for name, seconds in timings)
        + f"  (total {sum(s for _, s in timings):.0f}s)"
    )
    console.print(
        f"Try the short commands yourself: [bold]cd {folder}[/bold], then "
        "[bold]leuko evaluate[/bold] or [bold]leuko predict dataset/MONOCYTE[/bold]."
    )


def _first_val_image(val_csv: Path) -> str:
    import pandas as pd

    frame = pd.read_csv(val_csv)
    return str(Path(frame["path"].iloc[0]).relative_to(Path.cwd().resolve()))
