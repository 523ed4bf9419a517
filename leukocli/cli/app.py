"""The `leuko` command line: parse options, call the core library, render.

Nothing here imports TensorFlow at module level, so `leuko --help` stays instant;
each command imports the core module it needs inside its body.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import __version__
from .console import error_line
from .errors import EXIT_INTERRUPTED, LeukoError

app = typer.Typer(
    name="leuko",
    help=(
        "Turn folders of white-blood-cell micrographs into a trained classifier and honest "
        "reports.\n\nTypical run: leuko dedupe ./dataset; leuko split ./dataset; "
        "leuko train; leuko evaluate; leuko predict cell.jpg"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"leuko {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """leuko command line."""


# --------------------------------------------------------------------------- dedupe
@app.command()
def dedupe(
    data: Annotated[
        Path | None, typer.Argument(help="Dataset folder (DIR/<CLASS>/*.jpg) or CSV manifest.")
    ] = None,
    threshold: Annotated[
        int, typer.Option(help="Hamming distance (of 64 bits) for near-duplicate candidates.")
    ] = 10,
    transforms: Annotated[
        bool,
        typer.Option(
            "--transforms/--no-transforms",
            help="Also match flipped and 90-degree-rotated copies.",
        ),
    ] = True,
    report: Annotated[Path | None, typer.Option(help="Write the findings as JSON here.")] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Move duplicates and conflicts into quarantine.")
    ] = False,
    quarantine: Annotated[
        Path | None,
        typer.Option(help="Quarantine folder for --apply (default: DIR-quarantine beside DIR)."),
    ] = None,
    undo: Annotated[
        Path | None,
        typer.Option(help="Put back every file listed in this quarantine manifest."),
    ] = None,
    top: Annotated[int, typer.Option(help="How many of the largest groups to show.")] = 10,
) -> None:
    """Find exact and near-duplicate images, label conflicts and name collisions."""
    from .dedupe import run_dedupe_cli

    run_dedupe_cli(
        data=data,
        threshold=threshold,
        transforms=transforms,
        report=report,
        apply=apply,
        quarantine=quarantine,
        undo=undo,
        top=top,
    )


# --------------------------------------------------------------------------- split
@app.command()
def split(
    data: Annotated[Path, typer.Argument(help="Dataset folder or CSV manifest.")],
    out: Annotated[Path, typer.Option(help="Folder for train.csv, val.csv, test.csv.")] = Path(
        "splits"
    ),
    val: Annotated[float, typer.Option(help="Validation fraction.")] = 0.2,
    test: Annotated[float, typer.Option(help="Test fraction (0 for none).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    group_by: Annotated[
        str,
        typer.Option(
            help="auto (rediscover augmented siblings from pixels), none, column:NAME, "
            "or pattern:REGEX."
        ),
    ] = "auto",
    exclude: Annotated[
        Path | None, typer.Option(help="A dedupe --report JSON: drop what it would quarantine.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing OUT.")] = False,
) -> None:
    """Split into stratified, group-aware train/val(/test) CSV manifests."""
    from .split import run_split_cli

    run_split_cli(
        data=data, out=out, val=val, test=test, seed=seed, group_by=group_by, exclude=exclude,
        force=force,
    )


# --------------------------------------------------------------------------- train
@app.command()
def train(
    train_csv: Annotated[
        Path, typer.Option("--train", help="Training manifest or folder.")
    ] = Path("splits/train.csv"),
    val_csv: Annotated[
        Path, typer.Option("--val", help="Validation manifest or folder.")
    ] = Path("splits/val.csv"),
    img: Annotated[str, typer.Option(help="Input size HEIGHTxWIDTH.")] = "240x320",
    batch: Annotated[int, typer.Option(help="Batch size.")] = 20,
    epochs: Annotated[
        int | None,
        typer.Option(help="Epochs (default: the recipe's; 30 for paper, 8 for cpu)."),
    ] = None,
    lr: Annotated[float, typer.Option(help="Initial learning rate (Adam).")] = 1e-3,
    backbone: Annotated[
        str,
        typer.Option(
            help="inceptionresnetv2, xception, resnet50v2, inceptionv3, mobilenetv2, "
            "densenet121, efficientnetb0, or compact (small CNN from scratch)."
        ),
    ] = "inceptionresnetv2",
    weights: Annotated[
        str,
        typer.Option(help="imagenet (Keras download/cache), none, or PATH to a weights file."),
    ] = "auto",
    unfreeze: Annotated[
        int, typer.Option(help="Fine-tune only the top N backbone layers (0 = all).")
    ] = 0,
    augment: Annotated[
        bool, typer.Option("--augment/--no-augment", help="Random flips/rotations in training.")
    ] = True,
    class_weights: Annotated[str, typer.Option(help="auto (from class counts) or none.")] = "auto",
    patience: Annotated[
        int,
        typer.Option(
            help="Early-stopping patience in epochs (paper recipe; the cpu recipe's cosine "
            "schedule runs all epochs and keeps the best)."
        ),
    ] = 5,
    precision: Annotated[
        str, typer.Option(help="auto, float32, mixed_float16 or mixed_bfloat16.")
    ] = "auto",
    strategy: Annotated[
        str,
        typer.Option(
            help="auto, default, mirrored (GPUs of this machine) or multiworker (machines in "
            "TF_CONFIG)."
        ),
    ] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default runs/<timestamp>-<backbone>).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted run in --out (or latest).")
    ] = False,
    recipe: Annotated[
        str,
        typer.Option(
            help="auto (cpu for compact, paper otherwise), paper (flips/rotations, Adam, "
            "ReduceLROnPlateau) or cpu (cell crop, strong augmentation, label smoothing, "
            "AdamW with cosine decay)."
        ),
    ] = "auto",
    crop_cell: Annotated[
        int | None,
        typer.Option(
            help="Crop an NxN square around the stained cell inside the model (0 = whole "
            "image; default: the recipe's, 128 for cpu)."
        ),
    ] = None,
    label_smoothing: Annotated[
        float | None, typer.Option(help="Label smoothing (default: the recipe's).")
    ] = None,
    keep: Annotated[
        str | None,
        typer.Option(
            help="Which epoch's model to save: best (lowest val loss; paper's default) or "
            "last (cpu's default, so validation figures are not chosen on validation)."
        ),
    ] = None,
) -> None:
    """Train a classifier; writes runs/<name>/ and points runs/latest at it."""
    from .train import run_train_cli

    run_train_cli(
        train_csv=train_csv, val_csv=val_csv, img=img, batch=batch, epochs=epochs, lr=lr,
        backbone=backbone, weights=weights, unfreeze=unfreeze, augment=augment,
        class_weights=class_weights, patience=patience, precision=precision, strategy=strategy,
        seed=seed, out=out, resume=resume, recipe=recipe, crop_cell=crop_cell,
        label_smoothing=label_smoothing, keep=keep,
    )


# --------------------------------------------------------------------------- evaluate
@app.command()
def evaluate(
    data: Annotated[
        Path | None,
        typer.Argument(help="CSV manifest or class folder (default splits/test.csv or val.csv)."),
    ] = None,
    model: Annotated[
        Path, typer.Option(help="Run directory or .keras file.")
    ] = Path("runs/latest"),
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write metrics JSON here.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for metrics.json etc. (default: the run).")
    ] = None,
    batch: Annotated[int, typer.Option(help="Batch size.")] = 64,
    group_by: Annotated[
        str | None,
        typer.Option(help="auto, column:NAME or pattern:REGEX for group-level accuracy."),
    ] = None,
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", help="Rename a data class: OLD=NEW (repeatable)."),
    ] = None,
    ignore_unknown: Annotated[
        bool, typer.Option("--ignore-unknown", help="Skip images of classes the model lacks.")
    ] = False,
    tta: Annotated[
        int,
        typer.Option(
            help="Test-time augmentation: average over N views (flips, 12/24 degree turns, "
            "quarter turns, 5% shifts, in that order); 1 = off, at most 20."
        ),
    ] = 1,
) -> None:
    """Evaluate a trained model: accuracy with CI, per-class report, confusion matrix."""
    from .evaluate import run_evaluate_cli

    run_evaluate_cli(
        data=data, model=model, json_path=json_path, out=out, batch=batch, group_by=group_by,
        mapping=map_ or [], ignore_unknown=ignore_unknown, tta=tta,
    )


# --------------------------------------------------------------------------- predict
@app.command()
def predict(
    paths: Annotated[list[str], typer.Argument(help="Image files, folders or globs.")],
    model: Annotated[
        Path, typer.Option(help="Run directory or .keras file.")
    ] = Path("runs/latest"),
    top_k: Annotated[int, typer.Option(help="Show the K most probable classes.")] = 1,
    fmt: Annotated[
        str, typer.Option("--format", help="table, csv or json (csv/json go clean to stdout).")
    ] = "table",
    batch: Annotated[int, typer.Option(help="Batch size.")] = 64,
    tta: Annotated[
        int, typer.Option(help="Test-time augmentation views to average (1 = off, max 20).")
    ] = 1,
) -> None:
    """Classify images with a trained model."""
    from .predict import run_predict_cli

    run_predict_cli(paths=paths, model=model, top_k=top_k, fmt=fmt, batch=batch, tta=tta)


# --------------------------------------------------------------------------- synth
@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to create.")],
    per_class: Annotated[int, typer.Option(help="Distinct smears per class.")] = 30,
    size: Annotated[str, typer.Option(help="Image size HEIGHTxWIDTH.")] = "240x320",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
    siblings: Annotated[
        int, typer.Option(help="Augmented siblings rendered per smear (1 = none).")
    ] = 1,
    plant: Annotated[
        bool,
        typer.Option(
            "--plant/--no-plant",
            help="Plant duplicates, near copies, a label conflict, name collisions, a corrupt file.",  # noqa: E501
        ),
    ] = True,
    force: Annotated[bool, typer.Option("--force", help="Write into an existing folder.")] = False,
) -> None:
    """Write a synthetic stained-smear dataset (demo data and test fixtures)."""
    from .synth import run_synth_cli

    run_synth_cli(
        out=out, per_class=per_class, size=size, seed=seed, siblings=siblings, plant=plant,
        force=force,
    )


# --------------------------------------------------------------------------- demo
@app.command()
def demo(
    folder: Annotated[Path, typer.Argument(help="Working folder for the demo.")] = Path(
        "leuko-demo"
    ),
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
) -> None:
    """Run the whole chain on synthetic data: synth, dedupe, split, train, evaluate, predict."""
    from .demo import run_demo

    run_demo(folder=folder, epochs=epochs)


def main() -> None:
    """Console-script entry point: one-line errors and meaningful exit codes."""
    try:
        app()
    except LeukoError as exc:
        error_line(str(exc))
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        error_line("interrupted")
        raise SystemExit(EXIT_INTERRUPTED) from None


if __name__ == "__main__":
    main()
