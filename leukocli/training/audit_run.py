"""`leuko audit` as one core call: out-of-fold predictions (a cv run's, or a new cv run's)
ranked by `evaluation.audit`, and the files it writes.

It lives beside cv, not in evaluation/, because without a cv run it trains one (and
reads the cv run's plan); the command line and `lk.audit` both call `run_audit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._util.progress import SILENT, Reporter, spoken
from ..errors import LeukoError, ParameterError, cmd, opt
from ..evaluation.audit import AuditResult
from .options import TrainOptions, new_run_dir

if TYPE_CHECKING:
    import pandas as pd

AUDIT_FILE, GROUPS_FILE, CONTACT_FILE = "audit.csv", "audit_groups.csv", "contact.png"


@dataclass
class AuditRun:
    """The ranking, the cv run it came from, and what was left out or written."""

    result: AuditResult  # .images, .groups (most contradicted first), .thresholds
    cv_run: Path  # the cv run whose out-of-fold predictions were audited
    left_out: list[str] = field(default_factory=list)  # images the cv run's --exclude named
    written: list[Path] = field(default_factory=list)  # files written (none without out)
    exclude: dict[str, Any] | None = None  # the --write-exclude report, when one was asked


def check_top(top: int) -> None:
    """The one check of audit's `top`."""
    if top < 1:
        raise ParameterError("top", f"{opt('top')} must be at least 1 (got {top})")


def run_audit(data: Path, *, model: Path | None = None, opts: TrainOptions | None = None,
              folds: int = 5, group_by: str = "auto", cv_out: Path | None = None,
              out: Path | None = None, top: int = 10, exclude: Path | None = None,
              reporter: Reporter = SILENT) -> AuditRun:
    """Rank DATA's images and groups by how strongly held-out models contradict them.

    model: a collected cv run of DATA (its oof.csv); None runs the cross-validation first
    (`folds`, `group_by`, training options `opts`) into `cv_out` (default
    runs/audit-cv-<timestamp>). out: write audit.csv, audit_groups.csv and contact.png
    (the `top` groups) there; exclude: write the top suspect groups there as a
    dedupe-style report for `split --exclude`. Never changes the data.
    """
    from .._util.files import atomic_write_json, ensure_writable_dir
    from ..evaluation.audit import audit, exclude_report

    check_top(top)
    if out is not None:
        ensure_writable_dir(out)
    if model is None:
        model = _run_cv(data, opts or TrainOptions(), folds, group_by, cv_out, reporter)
    oof, classes, run, left_out = _oof(data, model, reporter)
    done = AuditRun(audit(oof, classes), run, left_out)
    if out is not None:
        done.written = write_audit(done.result, out, top)
    if exclude is not None:
        done.exclude = exclude_report(done.result, top)
        atomic_write_json(exclude, done.exclude)
        done.written.append(exclude)
    return done


def write_audit(result: AuditResult, out: Path, top: int) -> list[Path]:
    """audit.csv, audit_groups.csv and the contact sheet of the `top` groups."""
    from .._util.files import atomic_write_text
    from ..evaluation.audit import contact_sheet

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / AUDIT_FILE, result.images.to_csv(index=False))
    atomic_write_text(out / GROUPS_FILE, result.groups.to_csv(index=False))
    contact_sheet(result, out / CONTACT_FILE, top)
    return [out / AUDIT_FILE, out / GROUPS_FILE, out / CONTACT_FILE]


def _oof(data: Path, model: Path, reporter: Reporter
         ) -> tuple[pd.DataFrame, list[str], Path, list[str]]:
    """Out-of-fold predictions for DATA's images from a cv run: (oof, classes, the run,
    the images its --exclude left out)."""
    import pandas as pd

    from ..data.dataset import scan
    from ..modeling.bundle import resolve_run_dir
    from .cv import OOF_FILE

    run = resolve_run_dir(model)
    if not (run / OOF_FILE).is_file():
        raise ParameterError("model", f"{opt('model', model)}: not a collected leuko cv run (no "
                                      f"{OOF_FILE}); run `{cmd('cross_validate', data)}` first, "
                                      f"or leave {opt('model')} out")
    oof = pd.read_csv(run / OOF_FILE, dtype={"group": str})
    rel = {str(r.path.resolve()): r.rel for r in scan(data).records}
    wanted = set(rel)
    oof["path"] = [str(Path(p).resolve()) for p in oof["path"]]
    missing = wanted - set(oof["path"])
    left_out = _left_out_by_cv(run, {p: rel[p] for p in missing})
    if left_out:
        reporter.info(spoken(reporter, f"{len(left_out)} image(s) the cv run left out (its "
                             f"{opt('exclude')}) are not audited"))
        missing -= left_out
        wanted -= left_out
    if missing:
        raise LeukoError(f"{len(missing)} image(s) of {data} have no out-of-fold prediction in "
                         f"{run} (e.g. {sorted(missing)[0]}): was the cv run made on {data}?")
    classes = [c[len("prob_"):] for c in oof.columns if c.startswith("prob_")]
    oof = oof[oof["path"].isin(wanted)].reset_index(drop=True)
    oof["rel"] = [rel[p] for p in oof["path"]]  # what split --exclude matches on
    return oof, classes, run, sorted(left_out)


def _left_out_by_cv(run: Path, missing: dict[str, str]) -> set[str]:
    """The missing images (path -> path relative to DATA) that the cv plan's --exclude names."""
    from ..curation.groups import load_exclusions
    from .cv import load_plan

    if not missing:
        return set()
    exclude = load_plan(run).exclude
    if not exclude or not Path(exclude).is_file():
        return set()
    drop, _ = load_exclusions(Path(exclude))
    return {p for p, r in missing.items() if r in drop}


def _run_cv(data: Path, opts: TrainOptions, folds: int, group_by: str, run: Path | None,
            reporter: Reporter) -> Path:
    """A full cross-validation of DATA (no exclude, no TTA), collected; returns its folder.
    Planned by cv's own `plan_run`, so it checks and plans exactly as `leuko cv` would."""
    from .cv import collect, plan_run, prepare, train_folds

    run, plan = plan_run(data, out=run if run is not None else new_run_dir(prefix="audit-cv"),
                         folds=folds, fold=None, group_by=group_by, exclude=None, tta=1,
                         opts=opts, reporter=reporter)
    reporter.info(spoken(reporter, f"no {opt('model')}: cross-validating {data} into {run} "
                         f"first ({folds} folds)"))
    prepare(run, plan, reporter)
    train_folds(run, plan, list(range(folds)), reporter)
    collect(run, reporter)
    return run
