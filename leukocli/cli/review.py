"""`leuko review`: the verify step of a differential, as one page in the browser."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from .app import command
from .console import RichReporter, console
from .options import TABLE_JSON, TableOrJson, check_format


@command()
def review(
    source: Annotated[
        Path,
        typer.Argument(help="A count folder (cells.csv), an audit folder (audit.csv), or "
                            "predictions saved with `leuko predict ... --format csv > "
                            "FILE.csv`."),
    ] = Path("count"),
    out: Annotated[
        Path | None,
        typer.Option(help="HTML file to write (default: review.html in the count or audit "
                          "folder, or beside the predictions)."),
    ] = None,
    top: Annotated[int, typer.Option(help="Only the N least confident cells (0 = all).")] = 0,
    uncertain: Annotated[
        float, typer.Option(help="'Uncertain only' shows cells below this probability.")
    ] = 0.8,
    fmt: TableOrJson = "table",
) -> None:
    """Write one self-contained HTML page to verify leuko's classes: every cell as a
    thumbnail in its class's panel, least confident first; reclassify with a click or a
    key, watch the counts change, and save the corrections as a CSV for `leuko count
    --corrections` (smear photos) or `--relabel` (single-cell images).

    The page embeds its images and needs no server or network. Exit codes: 0 written,
    2 bad input.
    """
    from ..review.page import build_review

    check_format(fmt, TABLE_JSON)
    page, done = build_review(source, out=out, top=top, uncertain=uncertain,
                              reporter=RichReporter())
    size = page.stat().st_size / 1e6
    if fmt == "json":
        sys.stdout.write(json.dumps({"page": str(page), "kind": done.kind,
                                     "cells": len(done.items), "classes": done.classes,
                                     "bytes": page.stat().st_size}, indent=2) + "\n")
        return
    what = {"count": "a count", "audit": "an audit", "predictions": "predictions"}[done.kind]
    console.print(f"review: {page} ({len(done.items)} cells of {what}, {size:.1f} MB, "
                  "self-contained): open it in a browser", soft_wrap=True, highlight=False)
