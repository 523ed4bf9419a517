"""Hostile but realistic input: every case ends with a meaningful exit code, one error
line and no traceback, and no user file changes. One test per finding of the reliability
issue (latest pointer, many copies, tiny images, unwritable or full outputs, Ctrl-C,
foreign models, two runs at once, symlinked datasets, and the smaller ones)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import Run, invoke, tree_digest
from PIL import Image

from leukocli._util.files import output_lock
from leukocli._util.progress import Collecting
from leukocli.data.dataset import scan
from leukocli.data.synth import make_dataset
from leukocli.errors import LeukoError

TRAIN = ("--backbone", "compact", "--img", "48x48", "--crop-cell", "0", "--epochs", "1",
         "--batch", "4", "--precision", "float32")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A tiny dataset (d/) and a split of it (s/), in tmp_path."""
    make_dataset(tmp_path / "d", per_class=3, size=(48, 48), seed=4, plant=False)
    done = invoke("split", str(tmp_path / "d"), "--group-by", "none", "--out",
                  str(tmp_path / "s"), "--val", "0.34")
    assert done.code == 0, done.stderr
    return tmp_path


def _train(project: Path, out: Path, *extra: str) -> Run:
    return invoke("train", "--train", str(project / "s" / "train.csv"), "--val",
                  str(project / "s" / "val.csv"), *TRAIN, "--out", str(out), *extra)


# --------------------------------------------------------------------------- 1. latest
def test_latest_never_replaces_a_file_leuko_did_not_create(project: Path) -> None:
    (project / "p").mkdir()
    (project / "p" / "latest").write_text("my notes\n")
    before = tree_digest(project)
    done = _train(project, project / "p" / "run1")
    assert done.code == 0, done.stderr
    assert "Traceback" not in done.stderr
    after = tree_digest(project)
    assert {k: v for k, v in after.items() if not k.startswith("p/run1/")} == before
    assert "leuko did not create; left it alone" in done.stderr
    assert "p/latest left alone" in done.stdout


def test_latest_moves_only_once_a_run_has_saved_a_model(project: Path) -> None:
    from leukocli.cli.train import interrupt_message
    from leukocli.training.loop import train
    from leukocli.training.options import TrainOptions

    assert _train(project, project / "runs" / "good").code == 0
    latest = project / "runs" / "latest"
    assert latest.resolve() == (project / "runs" / "good").resolve()

    class StopAtOnce(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            raise KeyboardInterrupt

    opts = TrainOptions(train_csv=str(project / "s" / "train.csv"),
                        val_csv=str(project / "s" / "val.csv"), img_size=(48, 48), batch=4,
                        epochs=3, backbone="compact", crop_cell=0, precision="float32")
    result = train(opts, out=project / "runs" / "stopped", extra_callbacks=[StopAtOnce()])
    assert result.interrupted and result.epochs_done == 0
    assert latest.resolve() == (project / "runs" / "good").resolve()  # still the good one
    message = interrupt_message(result)
    assert "nothing is saved but its settings" in message and "checkpoints" not in message
    ok = invoke("predict", str(next((project / "d" / "MONOCYTE").iterdir())), cwd=project)
    assert ok.code == 0, ok.stderr


# --------------------------------------------------------------------------- 2. many copies
def test_dedupe_of_many_identical_copies_does_no_pairwise_work(tmp_path: Path) -> None:
    from leukocli.curation.dedupe import find_duplicates

    make_dataset(tmp_path / "src", per_class=1, size=(64, 64), seed=1, plant=False)
    for cls_dir in sorted((tmp_path / "src").iterdir()):
        if not cls_dir.is_dir():
            continue
        one = next(cls_dir.iterdir()).read_bytes()
        (tmp_path / "big" / cls_dir.name).mkdir(parents=True)
        for i in range(150):
            (tmp_path / "big" / cls_dir.name / f"{i}.jpeg").write_bytes(one)
    found = find_duplicates(tmp_path / "big")
    assert len(found.groups) == 4 and all(len(g.files) == 150 for g in found.groups)
    assert found.candidates == 0  # collapsed by digest before any hash matching
    assert found.pairs == 4 * 149  # one link per copy: linear, not 4 x 150 x 149 / 2


# --------------------------------------------------------------------------- 3. tiny images
def test_a_one_pixel_image_is_split_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                   ) -> None:
    monkeypatch.setenv("LEUKO_CACHE_DIR", str(tmp_path / "cache"))
    make_dataset(tmp_path / "d", per_class=3, size=(64, 64), seed=2, plant=False)
    Image.new("RGB", (1, 1), (120, 60, 180)).save(tmp_path / "d" / "MONOCYTE" / "dot.png")
    before = tree_digest(tmp_path / "d")
    done = invoke("split", str(tmp_path / "d"), "--out", str(tmp_path / "s"))
    assert done.code == 0, done.stderr
    assert "carry no keypoints" in done.stderr and "Traceback" not in done.stderr
    listed = "".join((tmp_path / "s" / f).read_text() for f in ("train.csv", "val.csv"))
    assert "MONOCYTE/dot.png" in listed
    assert tree_digest(tmp_path / "d") == before


# --------------------------------------------------------------------------- 4. outputs
@pytest.mark.parametrize("command", ["evaluate", "train", "split"])
def test_an_output_that_is_a_file_is_refused_before_any_work(project: Path, command: str) -> None:
    (project / "taken").write_text("a user's file")
    if command == "train":
        assert _train(project, project / "runs" / "r").code == 0  # a model for evaluate
    before = tree_digest(project)
    args = {
        "evaluate": ("evaluate", str(project / "s" / "val.csv"), "--model",
                     str(project / "runs" / "r"), "--out", str(project / "taken")),
        "train": ("train", "--train", str(project / "s" / "train.csv"), "--val",
                  str(project / "s" / "val.csv"), *TRAIN, "--out", str(project / "taken")),
        "split": ("split", str(project / "d"), "--out", str(project / "taken")),
    }
    if command == "evaluate":
        assert _train(project, project / "runs" / "r").code == 0
        before = tree_digest(project)
    invoke(*args[command]).one_line_error(2, "is a file, not a folder")
    assert tree_digest(project) == before


@contextlib.contextmanager
def _tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at `where` (root can write anywhere else); the test is skipped where
    mounting is not allowed."""
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                      capture_output=True, check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    with _tmpfs(tmp_path / "ro", "ro,size=64k") as where:
        yield where


def test_a_read_only_output_is_refused_before_any_work(project: Path, readonly_dir: Path) -> None:
    before = tree_digest(project)
    for args in (("split", str(project / "d"), "--out", str(readonly_dir / "s")),
                 ("train", "--train", str(project / "s" / "train.csv"), "--val",
                  str(project / "s" / "val.csv"), *TRAIN, "--out", str(readonly_dir / "r"))):
        invoke(*args).one_line_error(2, "Read-only file system", "choose a writable place")
    assert tree_digest(project) == before


def test_evaluating_a_run_in_a_read_only_folder_is_refused_before_any_work(
    tiny_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """evaluate writes RUN/evaluate/ by default: a run on a read-only mount is refused."""
    data, run = tiny_run
    with _tmpfs(tmp_path / "ro", "size=16m") as where:
        shutil.copytree(run, where / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        before = tree_digest(where)
        invoke("evaluate", str(data), "--model", str(where / "run")).one_line_error(
            2, "Read-only file system")
        assert tree_digest(where) == before


def test_a_full_disk_while_saving_loses_nothing(project: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    real_save = keras.Model.save

    def full_disk(self: keras.Model, path: str | Path, *a: object, **kw: object) -> None:
        Path(path).write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", full_disk)
    run = project / "runs" / "full"
    before = tree_digest(project / "d"), tree_digest(project / "s")
    done = _train(project, run)
    assert (tree_digest(project / "d"), tree_digest(project / "s")) == before
    done.one_line_error(2, "no space left on the device", "model.keras", "free some space")
    assert not (run / "model.keras").exists()
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no temporaries
    assert not (project / "runs" / "latest").exists()  # never pointed at a run without a model
    monkeypatch.setattr(keras.Model, "save", real_save)


# --------------------------------------------------------------------------- 5. Ctrl-C
def test_interrupted_apply_names_its_manifest_and_the_undo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leukocli.curation import quarantine

    make_dataset(tmp_path / "d", per_class=4, size=(64, 64), seed=6, siblings=1, plant=True)
    (tmp_path / "d" / "planted.json").unlink()
    (tmp_path / "d" / "sources.csv").unlink()
    before = tree_digest(tmp_path / "d")
    real_move = quarantine._move
    calls = iter(range(100))

    def move_then_stop(src: Path, dest: Path, sha: str) -> str | None:
        if next(calls) == 2:
            raise KeyboardInterrupt
        return real_move(src, dest, sha)

    monkeypatch.setattr(quarantine, "_move", move_then_stop)
    done = invoke("dedupe", str(tmp_path / "d"), "--apply")
    line = done.one_line_error(130, "interrupted:", "stopped after moving 2 of")
    assert "leuko dedupe --undo" in line
    manifest = line.split("--undo '")[1].rstrip("'")
    monkeypatch.setattr(quarantine, "_move", real_move)
    assert invoke("dedupe", "--undo", manifest).code == 0
    assert tree_digest(tmp_path / "d") == before


@pytest.mark.parametrize(("command", "target"), [
    ("split", "leukocli.curation.split.run_split"),
    ("predict", "leukocli.evaluation.predict.predict_paths"),
    ("evaluate", "leukocli.evaluation.evaluate.evaluate"),
])
def test_ctrl_c_in_any_command_is_one_line_and_exit_130(
    tiny_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str,
    target: str
) -> None:
    data, run = tiny_run
    module, name = target.rsplit(".", 1)

    def stop(*a: object, **kw: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(__import__(module, fromlist=[name]), name, stop)
    before = tree_digest(data), tree_digest(run)
    args = {"split": ("split", str(data), "--group-by", "none", "--out", str(tmp_path / "s")),
            "predict": ("predict", str(data), "--model", str(run)),
            "evaluate": ("evaluate", str(data), "--model", str(run), "--out",
                         str(tmp_path / "e"))}[command]
    invoke(*args).one_line_error(130, "interrupted")
    assert (tree_digest(data), tree_digest(run)) == before


# --------------------------------------------------------------------------- 6. foreign model
def test_a_keras_model_without_leuko_metadata_is_refused(project: Path) -> None:
    inp = keras.Input((48, 48, 3))
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))
    keras.Model(inp, out).save(project / "foreign.keras")
    image = next((project / "d" / "LYMPHOCYTE").iterdir())
    before = tree_digest(project)
    invoke("predict", str(image), "--model", str(project / "foreign.keras")).one_line_error(
        2, "has no leuko.json beside it"
    )
    assert tree_digest(project) == before


# --------------------------------------------------------------------------- 7. two runs
def test_a_second_run_on_a_busy_output_refuses_naming_the_first(project: Path) -> None:
    busy = f"pid {os.getpid()}"
    make_dataset(project / "dd", per_class=3, size=(48, 48), seed=4, plant=True)  # copies
    before = tree_digest(project)
    with output_lock(project / "dd", "leuko dedupe --apply"):  # a second apply on one tree
        invoke("dedupe", str(project / "dd"), "--apply").one_line_error(
            2, "in use by another", busy)
    assert tree_digest(project) == before
    with output_lock(project / "runs" / "r", "leuko train"):
        _train(project, project / "runs" / "r").one_line_error(2, "in use by another", busy)
    with output_lock(project / "s2", "leuko split"):
        invoke("split", str(project / "d"), "--out", str(project / "s2"), "--group-by",
               "none").one_line_error(2, "in use by another", busy)
    assert not (project / "s2" / "train.csv").exists()


# --------------------------------------------------------------------------- 8. symlinks
def test_symlinked_dataset_with_quarantine_elsewhere_round_trips(tmp_path: Path) -> None:
    make_dataset(tmp_path / "store", per_class=4, size=(64, 64), seed=8, plant=True)
    (tmp_path / "store" / "planted.json").unlink()
    (tmp_path / "store" / "sources.csv").unlink()
    links = tmp_path / "relsym"
    for f in sorted((tmp_path / "store").rglob("*.jpeg")):
        target = links / f.relative_to(tmp_path / "store")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(os.path.relpath(f, target.parent))
    before = tree_digest(links)
    qdir = tmp_path / "q" / "a" / "b" / "c"
    done = invoke("dedupe", str(links), "--apply", "--quarantine", str(qdir))
    assert done.code == 0, done.stderr
    moved = [p for p in qdir.rglob("*.jpeg")]
    assert moved and all(p.is_symlink() and p.exists() for p in moved)  # links still resolve
    manifest = next(qdir.glob("dedupe-manifest-*.jsonl"))
    undone = invoke("dedupe", "--undo", str(manifest))
    assert undone.code == 0, undone.stderr
    assert tree_digest(links) == before


# --------------------------------------------------------------------------- 9. smaller ones
def test_a_manifest_listing_one_image_under_two_labels_is_a_conflict(tmp_path: Path) -> None:
    make_dataset(tmp_path / "d", per_class=3, size=(48, 48), seed=3, plant=False)
    files = sorted((tmp_path / "d").rglob("*.jpeg"))
    rows = [f"{f},{f.parent.name}" for f in files] + [f"{files[0]},NEUTROPHIL"]
    (tmp_path / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    ds = scan(tmp_path / "m.csv")
    assert files[0].resolve() not in {r.path for r in ds.records}
    reasons = [p.reason for p in ds.problems]
    assert len(reasons) == 2 and all("label conflict" in r for r in reasons)


def test_conflicts_dangling_links_and_huge_images_are_one_warning_line_at_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dataset(tmp_path / "d", per_class=3, size=(48, 64), seed=3, plant=False)
    files = sorted((tmp_path / "d").rglob("*.jpeg"))
    rows = [f"{f},{f.parent.name}" for f in files] + [f"{files[0]},NEUTROPHIL"]
    (tmp_path / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "d" / "MONOCYTE" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # every 48x64 image is "huge"
    before = tree_digest(tmp_path / "d")
    for data, reason in ((tmp_path / "m.csv", "label conflict: the manifest lists this file as"),
                         (tmp_path / "d", "broken symbolic link (its target is missing)")):
        done = invoke("split", str(data), "--group-by", "none", "--out",
                      str(tmp_path / f"s-{data.stem}"), env={"LEUKO_QUIET": ""})
        assert done.code == 0, done.stderr
        assert "Traceback" not in done.stderr and "DecompressionBombWarning" not in done.stderr
        warned = [ln for ln in done.stderr.splitlines() if ln.startswith("warning:")]
        assert any(reason in ln for ln in warned), done.stderr
        assert any("very large image(s)" in ln for ln in warned), done.stderr
    assert tree_digest(tmp_path / "d") == before


def test_evaluate_and_predict_agree_on_unreadable_images(tiny_run: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    data, run = tiny_run
    folder = tmp_path / "one" / "MONOCYTE"
    folder.mkdir(parents=True)
    for f in list((data / "MONOCYTE").iterdir())[:2]:
        folder.joinpath(f.name).write_bytes(f.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    ev = invoke("evaluate", str(tmp_path / "one"), "--model", str(run), "--out",
                str(tmp_path / "e"))
    pr = invoke("predict", str(folder), "--model", str(run))
    assert ev.code == pr.code == 1
    assert (tmp_path / "e" / "metrics.json").exists()  # written all the same


def test_a_dangling_symlink_is_reported_not_skipped_silently(tmp_path: Path) -> None:
    make_dataset(tmp_path / "d", per_class=3, size=(48, 48), seed=3, plant=False)
    (tmp_path / "d" / "MONOCYTE" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    ds = scan(tmp_path / "d")
    assert [(p.rel, p.reason) for p in ds.problems] == [
        ("MONOCYTE/gone.jpg", "broken symbolic link (its target is missing)")
    ]


def test_a_huge_image_gives_one_leuko_line_not_python_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dataset(tmp_path / "d", per_class=3, size=(48, 64), seed=3, plant=False)
    # 48x64 = 3072 pixels: over the limit ("huge"), under twice it (Pillow's hard error)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    notes = Collecting()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = scan(tmp_path / "d", reporter=notes)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert len(ds.records) == 12 and len(notes.warnings) == 1
    assert "12 very large image(s)" in notes.warnings[0]


def test_bad_options_are_refused_before_tensorflow_loads(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cases = [["train", "--img", "240x"], ["train", "--batch", "0"],
             ["train", "--backbone", "compact", "--tta", "3"],
             ["predict", "x.jpg", "--tta", "99"], ["evaluate", "--tta", "0"],
             ["cv", str(tmp_path), "--folds", "1"], ["train", "--precision", "half"]]
    script = textwrap.dedent(f"""
        import json, sys
        from leukocli.cli import app
        out = []
        for argv in {cases!r}:
            try:
                code = app(argv, standalone_mode=False) or 0
            except SystemExit as exc:
                code = exc.code
            except Exception as exc:
                code = getattr(exc, "exit_code", type(exc).__name__)
            out.append([code, "tensorflow" in sys.modules])
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, check=False)
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(code == 2 for code, _ in results), (results, proc.stderr[-2000:])
    assert not any(tf for _, tf in results), results
    assert "Traceback" not in proc.stderr
    monkeypatch.chdir(tmp_path)  # were a refusal to regress, it writes here, not in the repo
    for argv in cases:  # and each bad value is one line saying what is wrong
        if "--tta" not in argv or argv[0] != "train":  # no such option: Typer's usage box
            invoke(*argv).one_line_error(2)


def test_refusals_leave_files_alone(project: Path) -> None:
    """A quick sweep of refusals across commands: exit 2, one line, nothing changed."""
    before = tree_digest(project)
    with pytest.raises(LeukoError):
        scan(project / "nope")
    for args, fragment in (
        (("dedupe", str(project / "d"), "--threshold", "40"), "--threshold"),
        (("split", str(project / "d"), "--val", "0.9", "--test", "0.2"), "--val and --test"),
        (("predict", str(project / "d"), "--model", str(project / "none")), "not found"),
        (("synth", str(project / "d"), "--size", "8x8"), "below the minimum"),
    ):
        invoke(*args).one_line_error(2, fragment)
    assert tree_digest(project) == before
    np.testing.assert_equal(json.loads((project / "s" / "split.json").read_text())["params"]
                            ["group_by"], "none")
