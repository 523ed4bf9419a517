"""The data steps: `dedupe` and `split`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._util.progress import SILENT, Reporter
from ..errors import LeukoError
from ._common import PathLike

if TYPE_CHECKING:
    from ..curation.dedupe import Findings

EXCLUDE_FILE = "dedupe.json"  # where split keeps in-memory Findings it was given


def dedupe(data: PathLike, *, threshold: int = 10, transforms: bool = True,
           report: PathLike | None = None, reporter: Reporter = SILENT) -> Findings:
    """Find exact and near-duplicate images, label conflicts and name collisions.

    Reads only, as `leuko dedupe` without --apply: moving files stays a deliberate step.

    Args:
        data: dataset folder (DIR/<CLASS>/*.jpg) or CSV manifest.
        threshold: Hamming distance (of 64 bits) for near-duplicate candidates.
        transforms: also match flipped and quarter-turned copies.
        report: also write the findings as JSON here (a file `split(exclude=)` takes).
    Returns:
        Findings: `.groups`, `.to_quarantine`, `.summary()`, `.to_dict()`.
    Raises:
        LeukoError: a missing path, a bad layout or threshold.
    """
    from .._util.files import atomic_write_json, ensure_writable_dir
    from ..curation.dedupe import find_duplicates

    if report is not None:  # checked before the scan, not after it
        ensure_writable_dir(Path(report).parent, "report")
    findings = find_duplicates(Path(data), threshold=threshold, transforms=transforms,
                               reporter=reporter)
    if report is not None:
        atomic_write_json(Path(report), findings.to_dict())
    return findings


def _exclude_file(exclude: PathLike | Findings | None, out: Path, force: bool) -> Path | None:
    """A dedupe report path for the core: in-memory Findings are written to OUT/dedupe.json
    (the core reads --exclude from a file, and split.json names it, so it has to last)."""
    from ..curation.dedupe import Findings

    if not isinstance(exclude, Findings):
        return None if exclude is None else Path(exclude)
    from .._util.files import atomic_write_json
    from ..curation.groups import load_exclusions
    from ..curation.split import check_out

    target = check_out(out, force) / EXCLUDE_FILE
    try:  # an earlier dedupe report (leuko's own) is replaced, anything else is kept
        if target.exists():
            load_exclusions(target)
    except LeukoError:
        raise LeukoError(f"{target} is not a dedupe report; leuko does not replace it") from None
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(target, exclude.to_dict())
    return target


def split(data: PathLike, *, out: PathLike = "splits", val: float = 0.2, test: float = 0.0,
          seed: int = 42, group_by: str = "auto", exclude: PathLike | Findings | None = None,
          force: bool = False, relabel: PathLike | None = None,
          reporter: Reporter = SILENT) -> dict[str, Any]:
    """Split into stratified, group-aware train/val(/test) CSV manifests in `out`.

    Args:
        val, test: fractions of each class (by whole groups); test=0 writes no test.csv.
        group_by: auto (rediscover augmented siblings), none, column:NAME, pattern:REGEX;
            a group never straddles two splits.
        exclude: dedupe's Findings or its report JSON: drop what it would quarantine.
            Findings are saved as OUT/dedupe.json first, so split.json names a real file.
        force: overwrite a split already in `out`.
        relabel: a corrections CSV saved by the `review` page: the images it names take
            the person's class (or are left out); split.json records the file.
    Returns:
        The summary written to split.json (params, classes, per-split counts, warnings).
    Raises:
        LeukoError: bad fractions or group spec, an existing split, nothing left to split.
    """
    from ..curation.groups import check_group_spec
    from ..curation.split import check_fractions, run_split

    check_fractions(val, test)  # before anything is written for in-memory Findings
    check_group_spec(group_by)
    target = Path(out)
    return run_split(Path(data), target, val=val, test=test, seed=seed, group_by=group_by,
                     exclude=_exclude_file(exclude, target, force), force=force,
                     relabel=None if relabel is None else Path(relabel), reporter=reporter)

