"""`leuko synth`: a synthetic stained-smear dataset with planted problems."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import LeukoError
from .app import command
from .console import RichReporter, console, simple_table, warn


@command()
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
        typer.Option("--plant/--no-plant", help="Plant duplicates, near copies, a label "
                                                "conflict, name collisions, a corrupt file."),
    ] = True,
    force: Annotated[bool, typer.Option("--force", help="Write into an existing folder.")] = False,
    fields: Annotated[
        int,
        typer.Option(help="Instead: N whole 480x640 fields of view with 0-3 white cells each "
                          "and their boxes (Pascal VOC), for leuko count."),
    ] = 0,
) -> None:
    """Write a synthetic stained-smear dataset (demo data and test fixtures)."""
    from ..data.dataset import parse_size
    from ..data.synth import MIN_SIZE, WRITTEN_BESIDE, check_synth_options, make_dataset

    if fields:
        _fields(out, fields, seed, force)
        return
    hw = parse_size(size, minimum=MIN_SIZE)
    check_synth_options(per_class, hw, siblings, plant)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise LeukoError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise LeukoError(f"{out} exists and is not empty; choose a new folder or add --force")
        rewritten = [n for n in WRITTEN_BESIDE if (out / n).exists()]
        warn(f"writing into non-empty {out}: images already there are kept (a different image "
             "where synth would write stops it)"
             + (f"; {' and '.join(rewritten)} are rewritten" if rewritten else ""))
    summary = make_dataset(out, per_class=per_class, size=hw, seed=seed, siblings=siblings,
                           plant=plant, reporter=RichReporter())
    _show(summary, out, hw, seed, per_class, siblings, plant)


def _show(summary: dict[str, Any], out: Path, hw: tuple[int, int], seed: int, per_class: int,
          siblings: int, plant: bool) -> None:
    rows: list[list[object]] = [[c, per_class, n] for c, n in summary["counts"].items()]
    rows.append(["total", summary["smears"], summary["images"]])
    console.print(
        f"Wrote {out}: {hw[0]}x{hw[1]} JPEGs, seed {seed}, {siblings} file(s) per smear",
        markup=False,
    )
    console.print(simple_table("Files per class", ["class", "smears", "files"], rows))
    if plant:
        p = summary["planted"]
        table = Table(title="Planted (listed in planted.json)", title_justify="left")
        table.add_column("case")
        table.add_column("count", justify="right")
        table.add_column("for example")
        examples: dict[str, Callable[[Any], str]] = {
            "exact": lambda e: e[1],
            "near": lambda e: f"{e['copy']} ({e['transform']})",
            "conflict": lambda e: e[1],
            "name_collisions": lambda e: e[1],
            "corrupt": str,
        }
        for key, example in examples.items():
            table.add_row(key, str(len(p[key])), example(p[key][0]))
        console.print(table)
    console.print(f"Ground truth of siblings and copies: {out / 'sources.csv'}")


def _fields(out: Path, n: int, seed: int, force: bool) -> None:
    from ..data.synth import make_fields

    if n < 1:
        raise LeukoError(f"--fields must be at least 1 (got {n})")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not force)):
        raise LeukoError(f"{out} exists and is not an empty folder; choose a new one or --force")
    made = make_fields(out, n=n, seed=seed, reporter=RichReporter())
    cells = sum(len(m["cells"]) for m in made)
    console.print(f"Wrote {n} fields with {cells} white cells to {out}/JPEGImages and their "
                  f"boxes to {out}/Annotations (try: leuko count {out}/JPEGImages --eval)",
                  soft_wrap=True)
