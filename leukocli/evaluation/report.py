"""One self-contained HTML report of a run: what it was, how it learned, where it fails.

Everything is embedded (PNG plots as data URIs, no scripts, no network), so the file
opens from disk anywhere. The page is a Jinja2 template (templates/report.html.j2); the
data comes from the run folder and from predictions: a cv run's out-of-fold predictions,
or an evaluation of a training run on --data (default: its validation manifest).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._util.files import read_json_object
from .._util.progress import SILENT, Reporter
from ..errors import LeukoError, opt
from ..modeling.bundle import META_FILE, Bundle, load_bundle, resolve_run_dir
from .metrics import classification_metrics

TEMPLATE = Path(__file__).resolve().parent / "templates" / "report.html.j2"
GALLERY = 12


@dataclass
class Predictions:
    """Images, their labels and groups, and the probabilities the report is about."""

    paths: list[str]
    labels: list[str]
    groups: list[str]
    probs: np.ndarray
    classes: list[str]
    source: str  # what the probabilities are: out-of-fold, or an evaluation on DATA


def png_uri(fig: Any) -> str:
    """A matplotlib figure as a data URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def file_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def gather(run: Path, data: Path | None, reporter: Reporter = SILENT) -> Predictions:
    """Out-of-fold predictions of a cv run, else an evaluation of the run on `data` (or on
    the validation manifest it was trained with)."""
    oof = run / "oof.csv"
    if data is None and oof.is_file():
        frame = pd.read_csv(oof, dtype={"group": str})
        classes = [c[len("prob_"):] for c in frame.columns if c.startswith("prob_")]
        return Predictions(list(frame.path), list(frame.label), list(frame.group.astype(str)),
                           frame[[f"prob_{c}" for c in classes]].to_numpy(float), classes,
                           "out-of-fold predictions (each image by the fold model that never "
                           "saw it)")
    if data is None:
        meta = read_json_object(run / META_FILE, "run metadata")
        val = (meta.get("manifests") or {}).get("val", {}).get("path")
        if not val or not Path(val).exists():
            raise LeukoError(f"{run} names no readable validation manifest; pass "
                             f"{opt('data', 'DATA')}")
        data = Path(val)
    from .evaluate import evaluate

    ev = evaluate(data, run, reporter=reporter)
    groups = [g if g is not None else f"image:{i}" for i, g in enumerate(ev.groups or
                                                                          [None] * len(ev.labels))]
    return Predictions([str(r.path) for r in ev.records], list(ev.labels), groups, ev.probs,
                       list(ev.classes), f"an evaluation on {data}")


def worst_mistakes(pred: Predictions, limit: int = GALLERY) -> list[int]:
    """Wrong predictions by loss, taking one per group in turn so one photo cannot fill
    the page."""
    index = {c: i for i, c in enumerate(pred.classes)}
    y = np.array([index[c] for c in pred.labels])
    loss = -np.log(np.clip(pred.probs[np.arange(len(y)), y], 1e-12, 1.0))
    wrong = [i for i in np.argsort(-loss, kind="stable") if pred.probs[i].argmax() != y[i]]
    by_group: dict[str, list[int]] = {}
    for i in wrong:
        by_group.setdefault(pred.groups[i], []).append(int(i))
    order = sorted(by_group.values(), key=lambda idx: -loss[idx[0]])
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit and any(len(g) > depth for g in order):
        chosen += [g[depth] for g in order if len(g) > depth][: limit - len(chosen)]
        depth += 1
    return chosen


def _gallery(bundle: Bundle, pred: Predictions, picks: list[int], work: Path
             ) -> list[dict[str, Any]]:
    """Each pick with its Grad-CAM (for the label the model missed, and what it called)."""
    from ..modeling.runtimes import load_images
    from .explain import explain, overlay

    if not picks:
        return []
    x = load_images([pred.paths[i] for i in picks], bundle.img_size)
    ex = explain(bundle, x)
    items = []
    for n, i in enumerate(picks):
        png = work / f"mistake{n}.png"
        called = pred.classes[int(pred.probs[i].argmax())]
        overlay(x[n], ex.maps[n], png, f"label {pred.labels[i]}, called {called}")
        items.append({"image": file_uri(png), "path": pred.paths[i], "group": pred.groups[i],
                      "label": pred.labels[i], "called": called,
                      "p_called": float(pred.probs[i].max()),
                      "p_label": float(pred.probs[i][pred.classes.index(pred.labels[i])])})
    return items


def build(run_arg: Path, data: Path | None = None, reporter: Reporter = SILENT) -> str:
    """The report's HTML for a run (or cv run) folder."""
    import tempfile

    from jinja2 import Environment, FileSystemLoader, select_autoescape

    run = resolve_run_dir(run_arg)
    if not run.is_dir() or not (run / META_FILE).is_file():
        raise LeukoError(f"{run_arg} is not a leuko run folder (a report needs the whole run)")
    pred = gather(run, data, reporter)
    index = {c: i for i, c in enumerate(pred.classes)}
    y = np.array([index[c] for c in pred.labels])
    metrics = classification_metrics(pred.probs, y, pred.classes, pred.groups)
    bundle = load_bundle(run)
    with tempfile.TemporaryDirectory() as tmp:
        from .report_figures import context

        ctx = context(run, pred, metrics, y)
        ctx["gallery"] = _gallery(bundle, pred, worst_mistakes(pred), Path(tmp))
    env = Environment(loader=FileSystemLoader(TEMPLATE.parent),
                      autoescape=select_autoescape(["html", "j2"]))
    return env.get_template(TEMPLATE.name).render(**ctx)
