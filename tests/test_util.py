"""Shared helpers: union-find, atomic writes that leave nothing half-written, output locks."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from leukocli._util.files import (
    LOCK_NAME,
    atomic_write,
    atomic_write_json,
    ensure_writable_dir,
    output_lock,
)
from leukocli._util.unionfind import KeyedUnionFind, UnionFind
from leukocli.errors import LeukoError


def test_union_find_roots_are_the_smallest_member() -> None:
    uf = UnionFind(6)
    uf.union(4, 2)
    uf.union(5, 4)
    uf.union(1, 3)
    assert uf.roots() == [0, 1, 2, 1, 2, 2]
    keyed: KeyedUnionFind[str] = KeyedUnionFind()
    keyed.union("s3", "s1")
    keyed.union("s2", "s3")
    assert {keyed.find(k) for k in ("s1", "s2", "s3")} == {"s1"}


def test_atomic_write_keeps_the_old_file_and_no_temporary_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    target.write_text("good old model")

    def full_disk(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(LeukoError, match="no space left on the device.*free some space"):
        atomic_write(target, full_disk)
    assert target.read_text() == "good old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]
    atomic_write_json(tmp_path / "new" / "m.json", {"a": 1})  # makes the folder
    assert json.loads((tmp_path / "new" / "m.json").read_text()) == {"a": 1}


def test_writable_dir_check_creates_nothing(tmp_path: Path) -> None:
    ensure_writable_dir(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(LeukoError, match="is a file, not a folder"):
        ensure_writable_dir(tmp_path / "file")
    with pytest.raises(LeukoError, match="is a file, not a folder"):
        ensure_writable_dir(tmp_path / "file" / "below")


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    busy = rf"in use by another leuko run \(first, pid {os.getpid()}"
    with output_lock(out, "first"), pytest.raises(LeukoError, match=busy):
        with output_lock(out, "second"):
            pass
    assert not (out / LOCK_NAME).exists()  # released
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    (out / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "what": "old run"}))
    with output_lock(out, "third") as lock:  # the holder is gone: its lock is stale
        assert json.loads(lock.read_text())["what"] == "third"


def test_first_line_is_one_readable_line_of_any_library_error() -> None:
    from leukocli.errors import first_line

    tf_error = ValueError("{{function_node __wrapped__CollectiveReduceV2_device_/job:worker/"
                          "task:0/device:CPU:0}} Collective ops is aborted by: recvmsg:"
                          "Connection reset by peer\n\nOriginal stack trace ...")
    assert first_line(tf_error) == "Collective ops is aborted by: recvmsg:Connection reset by peer"
    assert first_line(ValueError("config {'a': {'b': 1}} is bad\nmore")) == (
        "config {'a': {'b': 1}} is bad")  # only a leading node name is dropped
    assert first_line(KeyError()) == "KeyError" and len(first_line(OSError("x" * 500), 160)) == 160


def test_importing_the_library_leaves_the_callers_tensorflow_logging_alone() -> None:
    """Only the command line quiets TensorFlow (fd 2 and its logger); a notebook that
    imports leuko keeps its own process as it was."""
    probe = ("import os, sys; fd = os.fstat(2).st_ino; {pre}import leukocli._tf as t; "
             "print(t.tf.get_logger().level, os.fstat(2).st_ino == fd)")
    lib = subprocess.run([sys.executable, "-c", probe.format(pre="")], capture_output=True,
                         text=True, check=True)
    cli = subprocess.run([sys.executable, "-c", probe.format(pre="import leukocli.cli; ")],
                         capture_output=True, text=True, check=True)
    assert lib.stdout.split() != ["40", "True"] and lib.stdout.split()[1] == "True"
    assert cli.stdout.split() == ["40", "True"]


def test_a_test_run_never_writes_the_users_cache(tmp_path_factory: pytest.TempPathFactory
                                                 ) -> None:
    """conftest points LEUKO_CACHE_DIR into the session's temp folder for every test."""
    from leukocli.curation.keypoints import cache_dir

    cache = cache_dir().resolve()
    assert cache.is_relative_to(tmp_path_factory.getbasetemp().resolve()), cache
    assert not cache.is_relative_to((Path.home() / ".cache" / "leuko").resolve()), cache
    child = subprocess.run(
        [sys.executable, "-c", "from leukocli.curation.keypoints import cache_dir; "
                               "print(cache_dir().resolve())"],
        capture_output=True, text=True, check=True)
    assert Path(child.stdout.strip()) == cache  # and so does every leuko a test starts
