"""Scanning a class-folder tree or a CSV manifest into Records, with image checks.

Every command starts here, so layout mistakes are caught once, with one clear message,
and unreadable files become reported problems instead of crashes further down.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .._util.progress import SILENT, Reporter
from ..errors import LeukoError, ParameterError, first_line, opt
from .images import CheckMode, check_images

if TYPE_CHECKING:  # pandas loads only when a manifest is read (predict stays quick)
    import pandas as pd

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Record:
    """One image: absolute path, class label, path relative to the dataset root, optional group."""

    path: Path
    label: str
    rel: str
    group: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Problem:
    """A file that cannot be used, and why."""

    path: Path
    rel: str
    reason: str


@dataclass
class Dataset:
    """The result of a scan: usable records, problems, and the ordered class names."""

    root: Path
    source: Path
    layout: Literal["folder", "csv"]  # how it was given: class folders or a CSV manifest
    records: list[Record]
    problems: list[Problem]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def has_groups(self) -> bool:
        return any(r.group is not None for r in self.records)

    def to_frame(self) -> pd.DataFrame:
        """Records as a table (path, rel, label, label_id, group, extra columns)."""
        import pandas as pd

        index = {c: i for i, c in enumerate(self.classes)}
        rows = []
        for r in self.records:
            row: dict[str, object] = {
                "path": str(r.path),
                "rel": r.rel,
                "label": r.label,
                "label_id": index.get(r.label, -1),
                "group": r.group,
            }
            row.update(r.extra)
            rows.append(row)
        cols = ["path", "rel", "label", "label_id", "group"]
        return pd.DataFrame(rows, columns=cols if not rows else None)

    def counts(self) -> dict[str, int]:
        out = {c: 0 for c in self.classes}
        for r in self.records:
            out[r.label] = out.get(r.label, 0) + 1
        return out


def parse_renames(items: Sequence[str]) -> dict[str, str]:
    """OLD=NEW items (--map, repeatable) into class renames {OLD: NEW}; the one syntax
    check of a mapping (evaluation.evaluate.parse_mapping adds the model's classes to it)."""
    mapping: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition("=")
        old, new = old.strip(), new.strip()
        if not sep or not old or not new:
            raise ParameterError("mapping", f"{opt('mapping')} expects OLD=NEW (got {item!r})")
        if old in mapping and mapping[old] != new:
            raise ParameterError("mapping", f"{opt('mapping')} gives {old!r} two targets: "
                                            f"{mapping[old]} and {new}")
        mapping[old] = new
    return mapping



def relabel(ds: Dataset, mapping: dict[str, str]) -> Dataset:
    """The dataset with classes renamed (several old names may merge into one new one)."""
    if not mapping:
        return ds
    records = [Record(r.path, mapping.get(r.label, r.label), r.rel, r.group, r.extra)
               for r in ds.records]
    classes = sorted({r.label for r in records})
    return Dataset(ds.root, ds.source, ds.layout, records, ds.problems, classes)


def add_own_columns(frame: pd.DataFrame, records: Sequence[Record]) -> None:
    """Add a manifest's own columns (a lab, a site) to a table of its records, row for
    row, so the parts written from it (split's, cv's folds) keep them: train's
    `balance_by` finds its column there."""
    for column in sorted({c for r in records for c in r.extra} - set(frame.columns)):
        frame[column] = [r.extra.get(column, "") for r in records]


def require_classes(ds: Dataset, minimum: int = 2) -> None:
    """A classifier needs two classes: refuse one-class data before any work is done."""
    found = sorted({r.label for r in ds.records})
    if len(found) < minimum:
        raise LeukoError(
            f"{ds.source} holds {len(found)} class{'' if len(found) == 1 else 'es'} "
            f"({', '.join(found) or 'none'}); a classifier needs at least {minimum}: one "
            "folder per class (DIR/<CLASS>/*.jpg), or a manifest whose label column names them"
        )


MISSING_LABELS = {"nan", "na", "n/a", "null", "none"}  # what spreadsheets write for empty


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def parse_size(text: str, minimum: int = 1) -> tuple[int, int]:
    """Parse HEIGHTxWIDTH (e.g. 240x320) into (height, width)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text or "")
    if not m:
        raise LeukoError(f"image size must look like HEIGHTxWIDTH, e.g. 240x320 (got {text!r})")
    h, w = int(m.group(1)), int(m.group(2))
    if h < minimum or w < minimum:
        raise LeukoError(f"image size {h}x{w} is below the minimum of {minimum}x{minimum}")
    return h, w


def scan(path: str | Path, check: CheckMode = "decode", reporter: Reporter = SILENT) -> Dataset:
    """Scan a class-folder tree (DIR/<CLASS>/*.jpg) or a CSV manifest (path,label[,group])."""
    p = Path(path).expanduser()
    if not p.exists():
        raise LeukoError(f"{p}: no such file or directory")
    if p.is_file():
        if p.suffix.lower() == ".csv":
            return _scan_manifest(p, check, reporter)
        raise LeukoError(
            f"{p} is a file; expected a dataset folder (DIR/<CLASS>/*.jpg) or a CSV manifest"
        )
    if not p.is_dir():
        raise LeukoError(f"{p} is neither a folder nor a CSV manifest")
    return _scan_folder(p, check, reporter)


def _class_dirs(root: Path) -> list[Path]:
    try:
        entries = list(root.iterdir())
    except OSError as exc:
        raise LeukoError(f"cannot list {root}: {exc.strerror or exc}") from None
    return sorted(
        (d for d in entries if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name
    )


def _list_class(d: Path, root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(images, other files, broken links) under one class folder."""
    found: list[Path] = []
    others: list[Path] = []
    broken: list[Path] = []
    for f in sorted(d.rglob("*")):
        if _hidden(f, root):
            continue
        if f.is_symlink() and not f.exists():
            if is_image_name(f.name):
                broken.append(f)
            continue
        if f.is_file():
            (found if is_image_name(f.name) else others).append(f)
    return found, others, broken


def _scan_folder(root: Path, check: CheckMode, reporter: Reporter) -> Dataset:
    root = root.resolve()
    class_dirs = _class_dirs(root)
    if not class_dirs:
        loose = [f for f in root.iterdir() if f.is_file() and is_image_name(f.name)]
        if loose:
            raise LeukoError(
                f"{root} holds images but no class folders; put each class in its own "
                f"folder ({root}/<CLASS>/*.jpg)"
            )
        raise LeukoError(f"{root} holds no class folders (expected {root}/<CLASS>/*.jpg)")

    files: dict[str, list[Path]] = {}
    others: list[Path] = []
    broken: list[Path] = []
    for d in class_dirs:
        found, other, dead = _list_class(d, root)
        files[d.name] = found
        others += other
        broken += dead

    if all(all(f.parent != d for f in files[d.name]) for d in class_dirs) and any(
        files.values()
    ):
        names = ", ".join(d.name for d in class_dirs[:4])
        raise LeukoError(
            f"{root} looks like a folder of datasets ({names}), not of classes: "
            f"point at one of them, e.g. {class_dirs[0]}"
        )
    empty = [d.name for d in class_dirs if not files[d.name]]
    if empty:
        raise LeukoError(f"class folder {root / empty[0]} holds no images")

    candidates = [(f, d) for d, fs in files.items() for f in fs]
    reasons = check_images([f for f, _ in candidates], check, reporter=reporter)
    records: list[Record] = []
    problems: list[Problem] = [
        Problem(
            f, f.relative_to(root).as_posix(), f"not an image file ({f.suffix or 'no extension'})"
        )
        for f in others
    ] + [
        Problem(f, f.relative_to(root).as_posix(), "broken symbolic link (its target is missing)")
        for f in broken
    ]
    for (f, label), reason in zip(candidates, reasons, strict=True):
        rel = f.relative_to(root).as_posix()
        if reason is None:
            records.append(Record(path=f, label=label, rel=rel))
        else:
            problems.append(Problem(f, rel, reason))
    return Dataset(root, root, "folder", records, problems, [d.name for d in class_dirs])


def _read_manifest(csv_path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise LeukoError(f"{csv_path} is empty (needs columns path,label[,group])") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LeukoError(f"{csv_path} is not a readable CSV ({first_line(exc)})") from None
    except OSError as exc:
        raise LeukoError(f"cannot read {csv_path}: {exc.strerror or exc}") from None
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if missing:
        raise LeukoError(
            f"{csv_path} lacks column {', '.join(repr(c) for c in missing)} "
            f"(needs path,label[,group])"
        )
    if frame.empty:
        raise LeukoError(f"{csv_path} has no rows")
    return frame


def _manifest_conflicts(paths: Sequence[Path], labels: Sequence[str]) -> dict[int, str]:
    """Rows naming a file another row names too: a label conflict, or a repeat.

    A file listed under two labels would be trained as both (a label conflict, as dedupe
    calls it) and every row of it is left out; a file listed twice with one label is kept
    once.
    """
    rows: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(paths):
        rows[str(q.resolve())].append(i)
    out: dict[int, str] = {}
    for idx in rows.values():
        if len(idx) < 2:
            continue
        found = sorted({labels[i] for i in idx if labels[i]})
        if len(found) > 1:
            for i in idx:
                out[i] = f"label conflict: the manifest lists this file as {' and '.join(found)}"
        else:
            for i in idx[1:]:
                out[i] = f"listed again (row {idx[0] + 2} already has it); used once"
    return out


def _scan_manifest(csv_path: Path, check: CheckMode, reporter: Reporter) -> Dataset:
    csv_path = csv_path.resolve()
    frame = _read_manifest(csv_path)
    root = csv_path.parent
    extra_cols = [c for c in frame.columns if c not in ("path", "label", "group", "label_id")]
    has_group = "group" in frame.columns
    paths: list[Path] = []
    for raw in frame["path"]:
        q = Path(raw).expanduser()
        paths.append(q if q.is_absolute() else (root / q))
    labels = [str(v).strip() for v in frame["label"]]
    conflicts = _manifest_conflicts(paths, labels)
    reasons = check_images(paths, check, reporter=reporter)
    records: list[Record] = []
    problems: list[Problem] = []
    for i, (q, reason) in enumerate(zip(paths, reasons, strict=True)):
        row = frame.iloc[i]
        rel = _rel(q, root)
        if check == "none" and not q.exists():
            reason = "file not found"
        reason = reason or ("empty label" if not labels[i] else
                            f"missing label ({labels[i]!r}, as spreadsheets write an empty "
                            "cell)" if labels[i].lower() in MISSING_LABELS else conflicts.get(i))
        if reason is not None:
            problems.append(Problem(q, rel, reason))
            continue
        group = str(row["group"]) if has_group and str(row["group"]) != "" else None
        extra = {c: str(row[c]) for c in extra_cols}
        records.append(Record(path=q.resolve(), label=labels[i], rel=rel, group=group, extra=extra))
    if not records:
        raise LeukoError(f"{csv_path}: none of its {len(frame)} rows is a readable image")
    classes = sorted({r.label for r in records})
    return Dataset(root, csv_path, "csv", records, problems, classes)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def find_images(paths: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Expand files, folders (recursively) and shell globs into image paths, for predict."""
    import glob

    found: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        text = str(raw)
        p = Path(text).expanduser()
        if p.is_dir():
            hits = sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and is_image_name(f.name) and not _hidden(f, p)
            )
            if not hits:
                problems.append(Problem(p, text, "folder holds no images"))
            found.extend(hits)
        elif p.is_file():
            found.append(p)
        elif any(ch in text for ch in "*?["):
            hits = sorted(Path(h) for h in glob.glob(text, recursive=True) if Path(h).is_file())
            if not hits:
                problems.append(Problem(p, text, "pattern matched no files"))
            found.extend(hits)
        else:
            problems.append(Problem(p, text, "no such file or directory"))
    return found, problems
