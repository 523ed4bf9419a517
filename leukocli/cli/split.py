"""`leuko split`: stratified, group-aware train/val(/test) manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .app import command
from .console import RichReporter, console, simple_table
from .options import Exclude, GroupBy, Relabel


@command()
def split(
    data: Annotated[Path, typer.Argument(help="Dataset folder or CSV manifest.")],
    out: Annotated[
        Path, typer.Option(help="Folder for train.csv, val.csv, test.csv.")
    ] = Path("splits"),
    val: Annotated[float, typer.Option(help="Validation fraction.")] = 0.2,
    test: Annotated[float, typer.Option(help="Test fraction (0 for none).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    group_by: GroupBy = "auto",
    exclude: Exclude = None,
    relabel: Relabel = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing OUT.")] = False,
) -> None:
    """Split into stratified, group-aware train/val(/test) CSV manifests."""
    from ..curation.split import run_split

    summary = run_split(data, out, val=val, test=test, seed=seed, group_by=group_by,
                        exclude=exclude, force=force, relabel=relabel, reporter=RichReporter())
    render(summary)


def render(summary: dict[str, Any]) -> None:
    """Per class: images and groups in each split, and the achieved shares."""
    classes: list[str] = summary["classes"]
    splits: dict[str, dict[str, Any]] = summary["splits"]
    names = list(splits)
    cols = ["class"]
    for n in names:
        cols += [f"{n} images", f"{n} groups"]
    cols += [f"{n} share" for n in names if n != "train"]
    rows: list[list[object]] = []
    totals = {n: 0 for n in names}
    for c in classes:
        row: list[object] = [c]
        for n in names:
            row += [splits[n]["per_class"][c], splits[n]["groups_per_class"][c]]
            totals[n] += splits[n]["per_class"][c]
        all_c = sum(splits[n]["per_class"][c] for n in names) or 1
        row += [f"{splits[n]['per_class'][c] / all_c:.3f}" for n in names if n != "train"]
        rows.append(row)
    grand = sum(totals.values()) or 1
    last: list[object] = ["all"]
    for n in names:
        last += [totals[n], splits[n]["groups"]]
    last += [f"{totals[n] / grand:.3f}" for n in names if n != "train"]
    rows.append(last)
    console.print(simple_table("split", cols, rows))
