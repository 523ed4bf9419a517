"""Moving duplicates out of a dataset and back, with nothing ever lost.

`apply_quarantine` never deletes: it moves files into a quarantine folder and writes
every move to a JSON-lines manifest (flushed and fsynced) before making it, so
`undo_quarantine` can always put them back, even after Ctrl-C or a crash mid-way. A
symbolic link is moved as a link whose target still resolves from its new place, and
undo restores the link exactly as it was. One apply at a time per dataset (a lock).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._util.files import PARTIAL_PREFIX, file_sha256, move_file, output_lock
from .._util.progress import SILENT, Reporter
from ..errors import Interrupted, LeukoError, ParameterError, cmd, opt
from .dedupe import Findings

MANIFEST_VERSION = 1


@dataclass
class MoveSummary:
    moved: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    manifest: Path | None = None


def default_quarantine(root: Path) -> Path:
    return root.parent / f"{root.name}-quarantine"


def undo_command(manifest: Path) -> str:
    return f"leuko dedupe --undo '{manifest}'"


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _finished_or_free(dest: Path, sha: str) -> Path:
    """dest when it holds exactly this content (a move an interrupted apply had copied but
    not finished: moving there finishes it), else a free name beside it."""
    if dest.is_file() and not dest.is_symlink() and file_sha256(dest) == sha:
        return dest
    return _free_name(dest)


def _free_name(dest: Path) -> Path:
    """dest, or dest with a ~N suffix: never overwrite anything in quarantine."""
    if not (dest.exists() or dest.is_symlink()):
        return dest
    n = 1
    while True:
        cand = dest.with_name(f"{dest.stem}~{n}{dest.suffix}")
        if not (cand.exists() or cand.is_symlink()):
            return cand
        n += 1


class _Manifest:
    """Append-only JSON lines, flushed and fsynced per line (write-ahead log of moves)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")

    def write(self, entry: dict[str, Any]) -> None:
        self._fh.write(json.dumps(entry) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def check_quarantine(data: Path, quarantine: Path | None) -> Path:
    """The quarantine folder for DATA, refusing CSV manifests and folders inside the tree."""
    data = data.expanduser().resolve()
    if data.is_file():
        raise ParameterError(
            "apply", f"{opt('apply')} moves files, which would break the paths in {data}; "
            f"run dedupe on the class folder instead, or pass its {opt('report')} to "
            f"`{cmd('split', exclude='REPORT')}` to leave the files out without moving them"
        )
    qdir = (quarantine.expanduser() if quarantine else default_quarantine(data)).resolve()
    if _inside(qdir, data) or _inside(data, qdir):
        raise LeukoError(
            f"quarantine {qdir} must be outside the scanned tree {data} (or it would be scanned)"
        )
    return qdir


def _move(src: Path, dest: Path, sha: str) -> str | None:
    """Move one file (whole at one of its names at every moment, see move_file), or a
    symlink as a link that still resolves; return the link text."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not src.is_symlink():
        move_file(src, dest, sha)
        return None
    text = os.readlink(src)
    target = Path(text) if os.path.isabs(text) else (src.parent / text)
    os.symlink(os.path.relpath(os.path.abspath(target), dest.parent), dest)
    src.unlink()
    return text


def _restore(dest: Path, src: Path, sha: str, link: str | None) -> None:
    src.parent.mkdir(parents=True, exist_ok=True)
    if link is None:
        move_file(dest, src, sha)
        return
    os.symlink(link, src)
    dest.unlink()


def _plan(findings: Findings, summary: MoveSummary) -> list[str]:
    root = findings.root.resolve()
    todo: list[str] = []
    for g in findings.groups:
        if g.keep is not None and not (root / g.keep).is_file():
            # the copy meant to stay has gone since the scan: moving the rest would
            # take the picture out of the dataset altogether
            summary.notes.append(f"{g.keep} is gone since the scan; its group was left alone")
            summary.skipped += len(g.to_move)
            continue
        todo.extend(g.to_move)
    return sorted(todo)


def apply_quarantine(
    findings: Findings, quarantine: Path | None = None, reporter: Reporter = SILENT
) -> MoveSummary:
    """Move every file Findings.to_quarantine names into quarantine, logging each move.

    Ctrl-C stops between files and raises Interrupted naming the manifest and the undo
    command; every move made so far is in the manifest.
    """
    qdir = check_quarantine(findings.source, quarantine)
    root = findings.root.resolve()
    summary = MoveSummary()
    todo = _plan(findings, summary)
    if not todo:
        return summary
    with output_lock(root, "leuko dedupe --apply"):
        try:
            qdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LeukoError(f"cannot create quarantine {qdir}: {exc.strerror or exc}") from None
        mpath = _free_name(qdir / f"dedupe-manifest-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
        log = _Manifest(mpath)
        summary.manifest = mpath
        log.write({"leuko_dedupe_manifest": MANIFEST_VERSION, "root": str(root),
                   "quarantine": str(qdir), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        reason = {f: ("conflict" if g.conflict else g.match)
                  for g in findings.groups for f in g.to_move}
        try:
            with reporter.task("quarantining", len(todo)) as advance:
                for rel in todo:
                    advance()
                    _move_one(root, qdir, rel, reason.get(rel, ""), log, summary)
        except KeyboardInterrupt:
            raise Interrupted(
                f"stopped after moving {summary.moved} of {len(todo)} file(s); every move is "
                f"in {mpath}; put them back with: {undo_command(mpath)}"
            ) from None
        finally:
            # the count a reader checks: a manifest cut short, or with moves added, fails it
            log.write({CLOSED: summary.moved})
            log.close()
    return summary


def _move_one(
    root: Path, qdir: Path, rel: str, reason: str, log: _Manifest, summary: MoveSummary
) -> None:
    src = root / rel
    if not (src.is_file() or src.is_symlink()):
        summary.skipped += 1
        return
    try:
        sha = file_sha256(src)
        dest = _finished_or_free(qdir / rel, sha)
        entry = {"source": str(src), "destination": str(dest), "rel": rel, "sha256": sha,
                 "reason": reason}
        if src.is_symlink():
            entry["link"] = os.readlink(src)
        log.write({**entry, "status": "planned"})
        _move(src, dest, sha)
        log.write({**entry, "status": "moved"})
        summary.moved += 1
    except OSError as exc:
        summary.failed.append(f"{rel}: {exc.strerror or exc}")


CLOSED = "closed"  # the last line of a finished (or interrupted) apply: how many it moved


@dataclass
class Manifest:
    """A verified manifest: the folders it names, and the last state of every move."""

    path: Path
    root: Path
    quarantine: Path
    entries: list[dict[str, Any]]


def _parse_lines(p: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]], int | None]:
    """(header, move records in order, the closing count or None) of a manifest file."""
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LeukoError(f"cannot read manifest {p}: {exc}") from None
    header: dict[str, Any] | None = None
    records: list[dict[str, Any]] = []
    closed: int | None = None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):  # a line cut short by an interruption
                continue
            raise LeukoError(f"{p}:{n} is not a JSON line; not a dedupe manifest?") from None
        if header is None:
            if not (isinstance(obj, dict) and "leuko_dedupe_manifest" in obj):
                break
            header = obj
        elif isinstance(obj, dict) and set(obj) == {CLOSED} and isinstance(obj[CLOSED], int):
            closed = obj[CLOSED]
        elif isinstance(obj, dict) and {"source", "destination", "sha256"} <= obj.keys():
            records.append(obj)
        else:
            raise LeukoError(f"{p}:{n} lacks source/destination/sha256; not a dedupe manifest?")
    return header, records, closed


def _within(path: str, folder: Path) -> Path | None:
    """`path` as a Path when it is absolute and lexically inside `folder`, else None."""
    if not isinstance(path, str) or not os.path.isabs(path):
        return None
    norm = Path(os.path.normpath(path))
    return norm if norm != folder and _inside(norm, folder) else None


def _check_record(obj: dict[str, Any], root: Path, qdir: Path, where: str) -> None:
    """A move stays inside the two folders its manifest names, as apply wrote it."""
    rel = obj.get("rel")
    src = _within(obj["source"], root)
    dest = _within(obj["destination"], qdir)
    if (src is None or dest is None or not isinstance(rel, str)
            or not isinstance(obj["sha256"], str) or ".." in Path(rel).parts
            or Path(os.path.normpath(root / rel)) != src):
        raise LeukoError(
            f"{where}: a move from {obj.get('destination')!r} to {obj.get('source')!r} is not "
            f"between the dataset {root} and the quarantine {qdir} the manifest names; "
            "refusing the whole manifest (it was changed or is not leuko's)"
        )


def read_manifest(path: Path) -> Manifest:
    """A manifest's moves, verified before any file is touched, or one line saying why not.

    Verified: it starts with leuko's header; it lies in the quarantine its header names,
    which is outside the dataset it names; every record moves a file between those two
    folders only (so a line added by hand cannot move a file elsewhere); and, when its
    apply finished, the number of moves matches the count it closed with (a manifest cut
    short would otherwise restore nothing and say so cheerfully).
    """
    p = path.expanduser()
    if p.is_dir():
        raise ParameterError("undo", f"{p} is a folder; {opt('undo')} takes the manifest "
                                     "file inside the quarantine (dedupe-manifest-*.jsonl)")
    if not p.is_file():
        raise LeukoError(f"{p}: no such manifest file")
    header, records, closed = _parse_lines(p)
    if header is None:
        raise LeukoError(f"{p} is not a leuko dedupe manifest (no header line)")
    root = _within(str(header.get("root", "")), Path("/"))
    qdir = _within(str(header.get("quarantine", "")), Path("/"))
    if root is None or qdir is None or _inside(root, qdir) or _inside(qdir, root):
        raise LeukoError(f"{p}: its header does not name a dataset and a separate quarantine; "
                         "not a leuko dedupe manifest")
    if not _inside(p.resolve().parent, qdir.resolve()):
        raise LeukoError(f"{p} is not inside the quarantine {qdir} it names; leuko reads a "
                         "manifest only from its own quarantine")
    entries: dict[str, dict[str, Any]] = {}
    moved: set[str] = set()
    for obj in records:
        key = obj["destination"]
        entries[key] = {**entries.get(key, {}), **obj}
        if obj.get("status") == "moved":
            moved.add(key)
    for entry in entries.values():
        _check_record(entry, root, qdir, str(p))
    if closed is not None and closed != len(moved):
        raise LeukoError(f"{p} does not verify: it closed with {closed} move(s) but records "
                         f"{len(moved)}; it was cut short or changed, so nothing was restored")
    if closed is None:
        _check_accounted(p, qdir, set(entries))
    return Manifest(p, root, qdir, list(entries.values()))


def _check_accounted(p: Path, qdir: Path, listed: set[str]) -> None:
    """A manifest without its closing count (its apply was killed, or the file was cut):
    every file in the quarantine must be one that this or another manifest there lists."""
    for other in qdir.glob("*.jsonl"):
        if other != p:
            try:
                listed |= {r["destination"] for r in _parse_lines(other)[1]}
            except LeukoError:
                continue
    stray = [f for f in qdir.rglob("*") if (f.is_file() or f.is_symlink())
             and f.suffix != ".jsonl" and not f.name.startswith(PARTIAL_PREFIX)
             and os.path.normpath(f) not in listed]
    if stray:
        raise LeukoError(
            f"{p} does not verify: {len(stray)} file(s) in {qdir} (e.g. "
            f"{stray[0].relative_to(qdir)}) are in no manifest there, so it was cut short; "
            "nothing was restored"
        )


def undo_quarantine(manifest: Path, reporter: Reporter = SILENT) -> MoveSummary:
    """Move every quarantined file back, verifying its sha256; tolerate unmoved entries."""
    checked = read_manifest(manifest)
    entries = checked.entries
    summary = MoveSummary(manifest=manifest.expanduser())
    try:
        log = _Manifest(manifest.expanduser())
    except OSError as exc:  # a read-only quarantine: nothing could move out of it either
        raise LeukoError(f"cannot record restores in {manifest}: "
                         f"{exc.strerror or exc} (the quarantine {checked.quarantine} must be "
                         "writable to move files out of it); nothing was restored") from None
    try:
        with reporter.task("restoring", len(entries)) as advance:
            for e in entries:
                advance()
                _restore_one(e, log, summary)
    except KeyboardInterrupt:
        raise Interrupted(
            f"stopped after restoring {summary.moved} file(s); run the same undo again to "
            f"restore the rest: {undo_command(summary.manifest or manifest)}"
        ) from None
    finally:
        log.close()
    return summary


def _restore_one(e: dict[str, Any], log: _Manifest, summary: MoveSummary) -> None:
    src, dest, sha = Path(e["source"]), Path(e["destination"]), e["sha256"]
    link = e.get("link")
    try:
        if _in_place(src, sha, link):
            summary.skipped += 1  # planned but never moved, or already restored
            if link is None and dest.is_file() and file_sha256(dest) == sha:
                dest.unlink()  # an interrupted restore had copied it whole: finish it
            elif dest.exists() or dest.is_symlink():
                summary.notes.append(f"{src} is in place; a copy remains at {dest} (not deleted)")
            return
        problem = _restore_problem(src, dest, sha, link)
        if problem:
            summary.failed.append(problem)
            return
        _restore(dest, src, sha, link)
        log.write({**{k: e[k] for k in ("source", "destination", "rel", "sha256")},
                   "status": "restored"})
        summary.moved += 1
    except OSError as exc:
        summary.failed.append(f"{dest}: {exc.strerror or exc}")


def _in_place(src: Path, sha: str, link: str | None) -> bool:
    if link is not None:
        return src.is_symlink() and os.readlink(src) == link
    return src.is_file() and not src.is_symlink() and file_sha256(src) == sha


def _restore_problem(src: Path, dest: Path, sha: str, link: str | None) -> str | None:
    if not (dest.exists() or dest.is_symlink()):
        return f"{dest}: missing from quarantine"
    if link is None and file_sha256(dest) != sha:
        return f"{dest}: content changed since quarantine (sha256 differs); left there"
    if src.exists() or src.is_symlink():
        return (f"{src} exists and differs from the quarantined file; not overwritten "
                f"({dest} left in quarantine)")
    return None
