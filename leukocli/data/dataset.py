"""Scanning a class-folder tree or a CSV manifest into Records, with image checks.

Every command starts here, so layout mistakes are caught once, with one clear message,
and unreadable files become reported problems instead of crashes further down.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
from PIL import Image, UnidentifiedImageError

from .console import progress_bar
from .errors import LeukoError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
CheckMode = Literal["decode", "header", "none"]


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
    kind: Literal["folder", "csv"]
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


def file_sha256(path: Path) -> str:
    """Content identity of a file (streamed, so large files cost no memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


def check_image(path: Path, mode: CheckMode = "decode") -> str | None:
    """Return why `path` cannot be used as an image, or None when it can.

    'decode' decodes at reduced scale (JPEG draft mode), which catches truncated files
    for a fraction of a full decode; 'header' only identifies the format.
    """
    if mode == "none":
        return None
    try:
        with Image.open(path) as im:
            if mode == "header":
                im.verify()
                return None
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
            if im.width < 1 or im.height < 1:
                return "image has no pixels"
    except FileNotFoundError:
        return "file not found"
    except UnidentifiedImageError:
        return "not an image (format not recognised)"
    except (OSError, SyntaxError, ValueError) as exc:  # truncated, corrupt
        return f"corrupt image ({exc})"
    except Exception as exc:  # Pillow raises a zoo of types on hostile input
        return f"unreadable ({type(exc).__name__}: {exc})"
    return None


def check_images(
    paths: Sequence[Path], mode: CheckMode = "decode", description: str = "checking images"
) -> list[str | None]:
    """Check many images in parallel (Pillow releases the GIL while decoding)."""
    if mode == "none" or not paths:
        return [None] * len(paths)
    results: list[str | None] = []
    with progress_bar(description, len(paths)) as bar, ThreadPoolExecutor(4) as pool:
        for reason in pool.map(lambda p: check_image(p, mode), paths, chunksize=32):
            results.append(reason)
            bar.advance()
    return results


def scan(path: str | Path, check: CheckMode = "decode") -> Dataset:
    """Scan a class-folder tree (DIR/<CLASS>/*.jpg) or a CSV manifest (path,label[,group])."""
    p = Path(path).expanduser()
    if not p.exists():
        raise LeukoError(f"{p}: no such file or directory")
    if p.is_file():
        if p.suffix.lower() == ".csv":
            return _scan_manifest(p, check)
        raise LeukoError(
            f"{p} is a file; expected a dataset folder (DIR/<CLASS>/*.jpg) or a CSV manifest"
        )
    return _scan_folder(p, check)


def _scan_folder(root: Path, check: CheckMode) -> Dataset:
    root = root.resolve()
    class_dirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.name,
    )
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
    for d in class_dirs:
        found: list[Path] = []
        for f in sorted(d.rglob("*")):
            if not f.is_file() or _hidden(f, root):
                continue
            (found if is_image_name(f.name) else others).append(f)
        files[d.name] = found

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
    reasons = check_images([f for f, _ in candidates], check)
    records: list[Record] = []
    problems: list[Problem] = [
        Problem(
            f, f.relative_to(root).as_posix(), f"not an image file ({f.suffix or 'no extension'})"
        )
        for f in others
    ]
    for (f, label), reason in zip(candidates, reasons, strict=True):
        rel = f.relative_to(root).as_posix()
        if reason is None:
            records.append(Record(path=f, label=label, rel=rel))
        else:
            problems.append(Problem(f, rel, reason))
    return Dataset(root, root, "folder", records, problems, [d.name for d in class_dirs])


def _scan_manifest(csv_path: Path, check: CheckMode) -> Dataset:
    csv_path = csv_path.resolve()
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise LeukoError(f"{csv_path} is empty (needs columns path,label[,group])") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LeukoError(f"{csv_path} is not a readable CSV ({exc})".splitlines()[0]) from None
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if missing:
        raise LeukoError(
            f"{csv_path} lacks column {', '.join(repr(c) for c in missing)} "
            f"(needs path,label[,group])"
        )
    if frame.empty:
        raise LeukoError(f"{csv_path} has no rows")
    root = csv_path.parent
    extra_cols = [c for c in frame.columns if c not in ("path", "label", "group", "label_id")]
    has_group = "group" in frame.columns
    paths: list[Path] = []
    for raw in frame["path"]:
        q = Path(raw).expanduser()
        paths.append(q if q.is_absolute() else (root / q))
    reasons = check_images(paths, check)
    records: list[Record] = []
    problems: list[Problem] = []
    for i, (q, reason) in enumerate(zip(paths, reasons, strict=True)):
        row = frame.iloc[i]
        rel = _rel(q, root)
        label = str(row["label"]).strip()
        if not label:
            problems.append(Problem(q, rel, "empty label"))
            continue
        if check == "none" and not q.exists():
            reason = "file not found"
        if reason is not None:
            problems.append(Problem(q, rel, reason))
            continue
        group = str(row["group"]) if has_group and str(row["group"]) != "" else None
        extra = {c: str(row[c]) for c in extra_cols}
        records.append(Record(path=q.resolve(), label=label, rel=rel, group=group, extra=extra))
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
