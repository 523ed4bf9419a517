"""`leuko review`'s page: one self-contained HTML file in which a person verifies cells.

As a technologist does at an analyser: every cell as a thumbnail in its class's panel,
least confident first, moved to another class with a click or a key, the differential
recounted as they go, and "Save corrections" downloading the CSV that `count
--corrections` and `--relabel` read (data.corrections). Thumbnails and script are
embedded, so the file opens from disk with no server and no network; the cells' data
travels as JSON that the page's own script renders (Jinja escapes it for a script tag).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

from .. import __version__
from .._util.progress import SILENT, Reporter
from ..data.corrections import HEADER, SPECIAL
from ..data.dataset import is_image_name
from ..data.images import open_rgb
from ..errors import LeukoError, ParameterError, opt
from .items import Item, Review, gather

TEMPLATE = Path(__file__).resolve().parent / "templates" / "review.html.j2"
GENERATOR = "leuko review"  # the page's <meta name="generator">: how leuko knows its own
THUMB = 120  # thumbnail height in pixels (twice the shown size on a high-density screen)
MARGIN = 0.35  # context around a counted cell's box, as a share of its side
UNCERTAIN = 0.8  # "uncertain only" shows cells below this probability


def thumbnails(items: list[Item], base: Path | None = None, reporter: Reporter = SILENT
               ) -> list[str | None]:
    """A JPEG data URI per item (None where its photo cannot be read), each photo opened
    once; only image files are opened, whatever a CSV names. A relative path is tried
    from here, then from `base` (where the command that wrote it probably ran)."""
    by_photo: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        by_photo[it.photo].append(i)
    out: list[str | None] = [None] * len(items)
    with reporter.task("cutting thumbnails", len(by_photo)) as advance:
        for photo, idx in by_photo.items():
            img = _open(photo, base)
            for i in idx:
                if img is not None:
                    out[i] = _uri(_cut(img, items[i].box))
            advance()
    return out


def _open(photo: str, base: Path | None) -> Image.Image | None:
    if not is_image_name(photo):
        return None
    p = Path(photo)
    if not p.is_file() and base is not None and not p.is_absolute():
        p = base / p
    try:
        return open_rgb(p)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _cut(img: Image.Image, box: tuple[float, float, float, float] | None) -> Image.Image:
    if box is not None:
        x0, y0, x1, y1 = box
        side = min(max(x1 - x0, y1 - y0) * (1 + 2 * MARGIN), img.width, img.height)
        # the square slid inside the photo where it can be: context, not black edges
        left = min(max(0.0, (x0 + x1 - side) / 2), img.width - side)
        top = min(max(0.0, (y0 + y1 - side) / 2), img.height - side)
        img = img.crop((round(left), round(top), round(left + side), round(top + side)))
    w = max(1, round(img.width * THUMB / max(1, img.height)))
    return img.resize((min(w, 2 * THUMB), THUMB), Image.Resampling.LANCZOS)


def _uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def page_data(review: Review, thumbs: list[str | None], uncertain: float) -> dict[str, Any]:
    """Everything the page's script needs, as JSON-able values."""
    cells = [{"photo": it.photo, "box": it.box, "proposed": it.proposed,
              "p": round(it.probability, 4), "second": it.runner_up,
              "p2": None if it.runner_up_probability is None
              else round(it.runner_up_probability, 4),
              "current": it.current, "when": it.corrected_at, "src": src}
             for it, src in zip(review.items, thumbs, strict=True)]
    digest = hashlib.sha256(json.dumps([review.kind, str(review.source.resolve()),
                                        [c["photo"] for c in cells],
                                        [c["box"] for c in cells]]).encode()).hexdigest()
    return {"id": digest[:16], "kind": review.kind, "source": str(review.source),
            "classes": review.classes,
            "specials": [{"key": k, "name": v} for k, v in SPECIAL.items()],
            "header": list(HEADER), "uncertain": uncertain, "cells": cells,
            "made": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "version": __version__}


def render(data: dict[str, Any]) -> str:
    """The page: the template with the data embedded."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    what = {"count": "differential count", "audit": "label audit",
            "predictions": "predictions"}[data["kind"]]
    return template.render(data=data, what=what, generator=GENERATOR,
                           n=len(data["cells"]))


def is_review_page(path: Path) -> bool:
    """Whether `path` is a page leuko review wrote (a rerun may replace it)."""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}'.encode() in head


def default_page(review: Review) -> Path:
    """review.html in a count or audit folder, or beside a predictions CSV."""
    return review.folder / "review.html"


def build_review(source: str | os.PathLike[str], *, out: Path | None = None, top: int = 0,
                 uncertain: float = UNCERTAIN, reporter: Reporter = SILENT
                 ) -> tuple[Path, Review]:
    """Write the review page of `source`; a file there that leuko did not write is kept
    and the page goes beside it (review~1.html)."""
    from .._util.files import atomic_write_text, ensure_writable_dir, own_or_free

    if not 0.0 < uncertain <= 1.0:
        raise ParameterError("uncertain", f"{opt('uncertain')} must be in (0, 1] (got {uncertain})")
    if top < 0:
        raise ParameterError("top", f"{opt('top')} must be 0 (all) or more (got {top})")
    review = gather(source, top)
    target = out if out is not None else default_page(review)
    ensure_writable_dir(target.parent)
    thumbs = thumbnails(review.items, review.folder.resolve().parent, reporter)
    if not any(thumbs):
        raise LeukoError(f"none of the photos {review.source} names can be read (first: "
                         f"{review.items[0].photo}); review where the photos are")
    target = own_or_free(target, is_review_page)
    atomic_write_text(target, render(page_data(review, thumbs, uncertain)))
    return target, review
