"""Safe file writes, output checks and locks: nothing half-written, nothing overwritten
by surprise, and two runs never write one place at the same time."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import LeukoError, ParameterError, first_line, opt

LOCK_NAME = ".leuko.lock"


def _file_mode() -> int:
    """What a plain open() would give a new file: 0o666 less the umask (mkstemp gives 0o600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def file_sha256(path: Path) -> str:
    """Content identity of a file (streamed, so large files cost no memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


PARTIAL_PREFIX = ".leuko-partial-"  # a copy in progress; never a real name


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some filesystems cannot open a folder; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def move_file(src: Path, dest: Path, sha256: str) -> None:
    """Move a regular file whose content is `sha256` to `dest`, which must not exist.

    At every moment the file is whole under at least one of its two names, and nothing
    partial ever carries a real name, whatever interrupts it (Ctrl-C, a kill, a full
    disk). On one filesystem that is a rename. Across filesystems (shutil.move copies,
    then unlinks, and an interrupted copy left a 0-byte image under the real name) it
    copies to a hidden name beside `dest`, fsyncs, checks the sha256, links the copy to
    its real name (which never replaces a file that appeared meanwhile), and only then
    removes the source. A `dest` already holding exactly this content is the end of an
    interrupted move, which this finishes by removing the source.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and not dest.is_symlink() and file_sha256(dest) == sha256:
        src.unlink()  # an interrupted move had copied it whole: finish it
        return
    if dest.exists() or dest.is_symlink():
        raise FileExistsError(errno.EEXIST, "a different file is already there", str(dest))
    try:
        os.rename(src, dest)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = dest.with_name(f"{PARTIAL_PREFIX}{dest.name}")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            for block in iter(lambda: fin.read(1 << 20), b""):
                fout.write(block)
            fout.flush()
            os.fsync(fout.fileno())
        shutil.copystat(src, tmp)
        if file_sha256(tmp) != sha256:
            raise OSError(errno.EIO, "the copy does not match the original", str(dest))
        try:
            os.link(tmp, dest)
            tmp.unlink()
        except OSError as exc:  # a filesystem without hard links
            if exc.errno == errno.EEXIST:
                raise
            os.rename(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)
    src.unlink()


LEUKO_PNG = "leuko"  # the PNG `Software` text of every figure leuko writes


def png_metadata() -> dict[str, str]:
    """What leuko writes into its PNGs, so it can tell its own files from a user's."""
    return {"Software": LEUKO_PNG}


def own_or_free(path: Path, ours: Callable[[Path], bool] | None = None) -> Path:
    """`path` when it is free or a file leuko wrote there (by default: a PNG figure; a
    rerun replaces its own), else the first free `stem~N` name beside it: a user's file
    is never replaced."""
    mine = ours or _leuko_png
    if not (path.exists() or path.is_symlink()) or (not path.is_symlink() and mine(path)):
        return path
    n = 1
    while True:
        cand = path.with_name(f"{path.stem}~{n}{path.suffix}")
        if not (cand.exists() or cand.is_symlink()) or (not cand.is_symlink() and mine(cand)):
            return cand
        n += 1


def _leuko_png(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.format == "PNG" and im.info.get("Software") == LEUKO_PNG
    except Exception:  # noqa: BLE001 - not an image at all: certainly not leuko's figure
        return False


def os_error_message(exc: OSError, path: Path | str, action: str = "write") -> str:
    """One line for an OSError, saying what to do about the common causes."""
    if exc.errno == errno.ENOSPC:
        return (
            f"no space left on the device while trying to {action} {path}; "
            "free some space and run again"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = exc.strerror or "permission denied"
        return f"cannot {action} {path}: {reason} (choose a writable place)"
    return f"cannot {action} {path}: {exc.strerror or exc}"


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through `write(tmp)` into a temporary file beside `path`, then rename.

    A failure (full disk, Ctrl-C) removes the temporary file and leaves any earlier
    `path` untouched; OSError becomes a one-line LeukoError.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise LeukoError(os_error_message(exc, path)) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LeukoError(os_error_message(exc, path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json_object(path: Path, what: str = "metadata") -> dict[str, Any]:
    """A JSON object from `path`, or a one-line LeukoError saying why it is not one."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LeukoError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LeukoError(f"{path} is not readable {what} ({first_line(exc)})") from None
    if not isinstance(obj, dict):
        raise LeukoError(f"{path} is not readable {what} (expected a JSON object)")
    return obj


def ensure_writable_dir(folder: Path, option: str = "out") -> Path:
    """Prove `folder` could take files, without creating it; one-line ParameterError
    otherwise, naming `option`, the parameter (or an argument such as FOLDER) it came in.

    Checked before any work starts, so a read-only or mistaken output never costs a run,
    and a refused command leaves no empty folder behind.
    """
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ParameterError(option, f"{opt(option)} {folder} is a file, not a folder")
    probe_in = folder
    while not probe_in.exists():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if probe_in.exists() and not probe_in.is_dir():
        raise ParameterError(option, f"{opt(option)} {folder}: {probe_in} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=probe_in, prefix=".leuko-write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ParameterError(option, f"{opt(option)}: {os_error_message(exc, folder, 'write to')}"
                             ) from None
    return folder


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine still runs (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def output_lock(folder: Path, what: str) -> Iterator[Path]:
    """Hold `folder/.leuko.lock` while a command writes `folder`.

    A second run refuses with one line naming the holder's pid; a lock left by a process
    that no longer exists (on this host) is taken over. A folder the lock had to create
    is removed again when the work inside fails before writing anything into it.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
          "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            pid = int(holder.get("pid", -1))
            same_host = holder.get("host") in (None, me["host"])
            if pid > 0 and same_host and not pid_alive(pid):
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            if not holder:  # being written this instant, or unreadable: look again
                time.sleep(0.05)
                holder = _read_lock(lock)
                if not holder:
                    raise LeukoError(
                        f"{folder} is locked by {lock}; remove it if no leuko run is using it"
                    ) from None
            raise LeukoError(
                f"{folder} is in use by another leuko run ({holder.get('what', 'a command')}, "
                f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}); "
                f"wait for it to finish or choose another output"
            ) from None
        except OSError as exc:
            raise LeukoError(os_error_message(exc, lock, "lock")) from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(me, fh)
        break
    else:
        raise LeukoError(f"could not take the lock {lock}; remove it if no leuko run is using it")
    try:
        yield lock
    except BaseException:
        _release(lock, me)
        if created:
            try:
                folder.rmdir()  # only when empty: nothing was written
            except OSError:
                pass
        raise
    _release(lock, me)


def _release(lock: Path, me: dict[str, Any]) -> None:
    if _read_lock(lock).get("pid") == me["pid"]:
        lock.unlink(missing_ok=True)


def _read_lock(lock: Path) -> dict[str, Any]:
    try:
        obj = json.loads(lock.read_text(encoding="utf-8"))
        return obj if isinstance(obj, dict) else {}
    except (OSError, ValueError):
        return {}
