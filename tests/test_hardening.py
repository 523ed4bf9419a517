"""Hostile input, round three: a shared model folder never runs code and a foreign model
is refused when it is loaded; a tampered or truncated undo manifest moves nothing. Each
case asserts the exit code, the one error line, and that no user file changed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import invoke, tree_digest
from PIL import Image

from leukocli.curation.dedupe import find_duplicates
from leukocli.curation.quarantine import apply_quarantine
from leukocli.data.synth import make_dataset


def _copy_run(tiny_run: tuple[Path, Path], dest: Path) -> tuple[Path, Path]:
    data, run = tiny_run
    shutil.copytree(data, dest / "data")
    shutil.copytree(run, dest / "run")
    return dest / "data", dest / "run"


def _replace_model(run: Path, model: keras.Model) -> None:
    (run / "model.keras").unlink()
    model.save(run / "model.keras")


# --------------------------------------------------------------------------- 1. code
def _lambda_model(marker: Path, size: tuple[int, int], n: int) -> keras.Model:
    """What an attacker shares: a Lambda layer that writes `marker` when it runs."""
    grab = eval(f"lambda x: (open({str(marker)!r}, 'w').write('x'), x)[1]")  # noqa: S307
    inp = keras.Input((*size, 3), name="image")
    x = keras.layers.Lambda(grab, name="evil")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(n, activation="softmax", name="probs")(x)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory, tiny_run: tuple[Path, Path]
         ) -> tuple[Path, Path, Path]:
    """(data, run with a code-running model beside a genuine copied leuko.json, marker)."""
    root = tmp_path_factory.mktemp("evil")
    data, run = _copy_run(tiny_run, root)
    meta = json.loads((run / "leuko.json").read_text())
    marker = root / "PWNED"
    _replace_model(run, _lambda_model(marker, tuple(meta["img_size"]), len(meta["classes"])))
    marker.unlink(missing_ok=True)  # saving traced the layer once; nothing may run it again
    return data, run, marker


def _commands(data: Path, run: Path, out: Path) -> list[tuple[str, ...]]:
    image = str(next(data.glob("*/*.jpeg")))
    return [
        ("predict", image, "--model", str(run)),
        ("evaluate", str(data), "--model", str(run), "--out", str(out / "ev")),
        ("explain", image, "--model", str(run), "--out", str(out / "ex")),
        ("count", image, "--model", str(run), "--out", str(out / "co")),
        ("report", str(run), "--data", str(data)),
        ("export", str(run), "--format", "savedmodel", "--out", str(out / "m")),
    ]


def test_a_shared_model_with_code_never_runs_it(evil: tuple[Path, Path, Path],
                                                 tmp_path: Path) -> None:
    data, run, marker = evil
    before = tree_digest(run.parent)
    for args in _commands(data, run, tmp_path):
        done = invoke(*args, cwd=tmp_path)
        done.one_line_error(2, "holds Python code")
        assert not marker.exists(), args
    assert tree_digest(run.parent) == before


def test_training_from_a_shared_run_with_code_never_runs_it(
    evil: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, run, marker = evil
    split = invoke("split", str(data), "--group-by", "none", "--out", str(tmp_path / "s"))
    assert split.code == 0, split.stderr
    done = invoke("train", "--train", str(tmp_path / "s" / "train.csv"), "--val",
                  str(tmp_path / "s" / "val.csv"), "--backbone", "compact", "--weights",
                  str(run), "--img", "75x75", "--epochs", "1", "--batch", "4",
                  "--precision", "float32", "--out", str(tmp_path / "r"), cwd=tmp_path)
    done.one_line_error(2, "holds Python code")
    assert not marker.exists()


# --------------------------------------------------------------------------- 2. foreign
def _plain_model(size: tuple[int, int], n: int) -> keras.Model:
    inp = keras.Input((*size, 3))
    out = keras.layers.Dense(n, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))
    return keras.Model(inp, out)


@pytest.mark.parametrize("case", ["plain", "other size"])
def test_a_foreign_model_beside_a_copied_card_is_refused_on_loading(
    tiny_run: tuple[Path, Path], tmp_path: Path, case: str
) -> None:
    data, run = _copy_run(tiny_run, tmp_path)
    meta = json.loads((run / "leuko.json").read_text())
    n = len(meta["classes"])
    if case == "plain":
        _replace_model(run, _plain_model(tuple(meta["img_size"]), n))
        expected = "is not a model leuko built"
    else:
        from leukocli.modeling.model import build_model

        _replace_model(run, build_model("compact", (64, 64), n, crop_cell=0))
        expected = "takes input 64x64x3"
    before = tree_digest(tmp_path)
    for args in _commands(data, run, tmp_path / "out"):
        invoke(*args).one_line_error(2, expected)
    assert tree_digest(tmp_path) == before


def test_an_exported_model_of_another_shape_is_refused_on_loading(
    tiny_run: tuple[Path, Path], tmp_path: Path
) -> None:
    data, run = _copy_run(tiny_run, tmp_path)
    out = tmp_path / "m.tflite"
    assert invoke("export", str(run), "--format", "litert", "--out", str(out)).code == 0
    card = out.with_name(out.name + ".leuko.json")
    meta = json.loads(card.read_text())
    image = str(next(data.glob("*/*.jpeg")))
    card.write_text(json.dumps({**meta, "img_size": [64, 64]}))
    invoke("predict", image, "--model", str(out)).one_line_error(2, "takes input", "64x64")
    card.write_text(json.dumps({**meta, "classes": [*meta["classes"], "EXTRA"]}))
    invoke("predict", image, "--model", str(out)).one_line_error(2, "outputs", "classes")


# --------------------------------------------------------------------------- 3. manifests
@pytest.fixture
def applied(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A planted dataset after `dedupe --apply`: (data, manifest, digest before apply)."""
    root = tmp_path / "data"
    make_dataset(root, per_class=4, size=(64, 64), seed=3, siblings=1, plant=True)
    for extra in ("planted.json", "sources.csv"):
        (root / extra).unlink(missing_ok=True)
    before = tree_digest(root)
    summary = apply_quarantine(find_duplicates(root), tmp_path / "q")
    assert summary.manifest is not None and summary.moved > 0
    return root, summary.manifest, before


def test_a_manifest_line_moving_a_file_elsewhere_is_refused(
    applied: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    root, manifest, _ = applied
    (tmp_path / "victim").mkdir()
    secret = tmp_path / "victim" / "secret.txt"
    secret.write_text("mine")
    lines = manifest.read_text().splitlines()
    record = json.loads(lines[1])
    forged = {**record, "source": str(tmp_path / "elsewhere" / "secret.txt"),
              "destination": str(secret), "rel": "secret.txt", "status": "moved"}
    manifest.write_text("\n".join([*lines[:-1], json.dumps(forged), lines[-1]]) + "\n")
    before = tree_digest(tmp_path)
    invoke("dedupe", "--undo", str(manifest)).one_line_error(2, "is not between the dataset")
    assert tree_digest(tmp_path) == before and secret.read_text() == "mine"


def test_a_truncated_manifest_restores_nothing_and_says_so(
    applied: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    root, manifest, _ = applied
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:3]) + "\n")  # header and one move: cut short
    before = tree_digest(tmp_path)
    invoke("dedupe", "--undo", str(manifest)).one_line_error(2, "does not verify")
    assert tree_digest(tmp_path) == before
    # a changed count (a move removed, the closing line kept) is caught the same way
    manifest.write_text("\n".join([*lines[:3], lines[-1]]) + "\n")
    before = tree_digest(tmp_path)
    invoke("dedupe", "--undo", str(manifest)).one_line_error(2, "does not verify")
    assert tree_digest(tmp_path) == before


def test_a_manifest_outside_its_quarantine_or_naming_a_folder_is_refused(
    applied: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    root, manifest, before = applied
    moved = tmp_path / "m.jsonl"
    shutil.copy(manifest, moved)
    invoke("dedupe", "--undo", str(moved)).one_line_error(2, "is not inside the quarantine")
    invoke("dedupe", "--undo", str(manifest.parent)).one_line_error(2, "is a folder")
    done = invoke("dedupe", "--undo", str(manifest))  # the genuine one still restores all
    assert done.code == 0, done.stderr
    assert tree_digest(root) == before


# --------------------------------------------------------------------------- 4-5. moves
@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A second filesystem (a 64 MB tmpfs) for the quarantine, so moves are copies."""
    with _tmpfs(tmp_path / "other", "size=64m") as where:
        yield where


@contextlib.contextmanager
def _tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                      capture_output=True, check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (cross-filesystem moves need a second one)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _copies_dataset(root: Path, n: int = 3, copies: int = 8, size: int = 160) -> dict[str, str]:
    """n noisy PNGs per class, each with `copies` byte-identical copies (dedupe moves
    those), big enough that a copy takes a moment; returns the tree's digest."""
    rng = np.random.default_rng(0)
    for c in ("EOSINOPHIL", "LYMPHOCYTE"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            first = root / c / f"{c[:3]}_{i}.png"
            Image.fromarray(img).save(first)
            for k in range(copies):
                shutil.copy(first, root / c / f"{c[:3]}_{i}_copy{k}.png")
    return tree_digest(root)


def _whole(root: Path, originals: dict[str, str], qdir: Path) -> None:
    """Every file under a real name, in the dataset or the quarantine, is whole."""
    known = set(originals.values())
    for folder in (root, qdir):
        for rel, sha in tree_digest(folder).items():
            name = Path(rel).name
            if name.endswith(".jsonl") or name.startswith(".leuko"):
                continue
            assert sha in known, f"{folder / rel} is not a whole image"


@pytest.mark.parametrize("moment", ["while copying", "after the copy, before the unlink"])
def test_an_interrupted_cross_filesystem_move_leaves_every_file_whole_and_finishes(
    tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    from leukocli._util import files

    root = tmp_path / "data"
    before = _copies_dataset(root)
    qdir = other_fs / "q"
    target = "copystat" if moment == "while copying" else "_fsync_dir"
    real = files.shutil.copystat if target == "copystat" else files._fsync_dir
    calls = iter(range(1000))
    stop_at = [4]

    def stop_at_call(*args: object, **kw: object) -> None:
        if next(calls) == stop_at[0]:
            raise KeyboardInterrupt
        real(*args, **kw)

    where = files.shutil if target == "copystat" else files
    monkeypatch.setattr(where, target, stop_at_call)
    done = invoke("dedupe", str(root), "--apply", "--quarantine", str(qdir))
    line = done.one_line_error(130, "stopped after moving 4 of")
    _whole(root, before, qdir)
    manifest = Path(line.split("--undo '")[1].rstrip("'"))

    calls, stop_at[0] = iter(range(1000)), 2  # the same moment, now in the undo
    invoke("dedupe", "--undo", str(manifest)).one_line_error(130, "run the same undo again")
    _whole(root, before, qdir)
    monkeypatch.setattr(where, target, real)
    done = invoke("dedupe", "--undo", str(manifest))  # a rerun finishes what was left
    assert done.code == 0, done.stderr
    assert tree_digest(root) == before
    assert [p.name for p in qdir.rglob("*") if p.is_file()] == [manifest.name]


def test_a_killed_copy_leaves_only_a_hidden_partial_that_the_rerun_replaces(
    tmp_path: Path, other_fs: Path
) -> None:
    root = tmp_path / "data"
    before = _copies_dataset(root, n=1, copies=2)
    qdir = other_fs / "q"
    rel = "EOSINOPHIL/EOS_0_copy0.png"
    (qdir / "EOSINOPHIL").mkdir(parents=True)
    (qdir / "EOSINOPHIL" / ".leuko-partial-EOS_0_copy0.png").write_bytes(b"\x89PNG cut")
    done = invoke("dedupe", str(root), "--apply", "--quarantine", str(qdir))
    assert done.code == 0, done.stderr
    assert (qdir / rel).read_bytes() == (root / "EOSINOPHIL" / "EOS_0.png").read_bytes()
    assert not (qdir / "EOSINOPHIL" / "EOS_0_copy0~1.png").exists()
    manifest = next(qdir.glob("*.jsonl"))
    assert invoke("dedupe", "--undo", str(manifest)).code == 0
    assert tree_digest(root) == before


def test_a_full_disk_during_a_cross_filesystem_apply_leaves_no_partial_file(
    tmp_path: Path
) -> None:
    root = tmp_path / "data"
    before = _copies_dataset(root, n=2, copies=6, size=200)  # 24 moves of about 120 kB
    with _tmpfs(tmp_path / "small", "size=1m") as small:
        qdir = small / "q"
        done = invoke("dedupe", str(root), "--apply", "--quarantine", str(qdir))
        assert done.code == 1, done.stderr  # some moved, the rest reported
        assert "No space left on device" in done.stderr and "Traceback" not in done.stderr
        _whole(root, before, qdir)
        assert not [p for p in qdir.rglob(".leuko-partial-*")]
        assert not [p for p in qdir.rglob("*~1*")]
        manifest = next(qdir.glob("*.jsonl"))
        assert invoke("dedupe", "--undo", str(manifest)).code == 0
        assert tree_digest(root) == before


def test_sigint_at_any_moment_of_a_cross_filesystem_undo_loses_nothing(
    tmp_path: Path, other_fs: Path
) -> None:
    """The issue's own reproduction: `timeout -s INT` at several moments of an undo."""
    root = tmp_path / "data"
    before = _copies_dataset(root, n=3, copies=12, size=400)  # 72 moves of about 470 kB
    qdir = other_fs / "q"
    assert invoke("dedupe", str(root), "--apply", "--quarantine", str(qdir)).code == 0
    manifest = next(qdir.glob("*.jsonl"))
    for delay in (0.6, 0.8, 1.0, 1.2, 1.5):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run(["timeout", "--preserve-status", "-s", "INT", str(delay),
                               sys.executable, "-m", "leukocli", "dedupe", "--undo",
                               str(manifest)], capture_output=True, text=True, env=env,
                              check=False)
        assert proc.returncode in (0, 130), proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        _whole(root, before, qdir)
        if proc.returncode == 0:
            break
    done = invoke("dedupe", "--undo", str(manifest))
    assert done.code == 0, done.stderr
    assert tree_digest(root) == before


# --------------------------------------------------------------------------- 9-11. one line
@pytest.mark.parametrize(("args", "fragment"), [
    (("split", "x", "--val", "abc"), "Invalid value for '--val'"),
    (("train", "--batch", "abc"), "Invalid value for '--batch'"),
    (("train", "--no-such-option"), "No such option: --no-such-option"),
    (("no-such-command",), "No such command 'no-such-command'"),
    (("predict",), "Missing argument"),
])
def test_usage_errors_are_one_line_on_stderr(args: tuple[str, ...], fragment: str) -> None:
    done = invoke(*args)
    line = done.one_line_error(2, fragment, "--help`)")
    assert done.stdout == "" and done.stderr.strip().splitlines()[-1].endswith(line)


def _interrupted(args: list[str], delay: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0")  # the C++ log must stay quiet anyway
    proc = subprocess.Popen([sys.executable, "-m", "leukocli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.5, 5.0])
def test_ctrl_c_at_any_moment_of_predict_is_one_line_and_130(
    tiny_run: tuple[Path, Path], tmp_path: Path, delay: float
) -> None:
    """During Python's imports, TensorFlow's, the model's load or the predictions."""
    data, run = tiny_run
    many = tmp_path / "many"
    for i in range(40):
        shutil.copytree(data, many / f"c{i}")
    done = _interrupted(["predict", str(many), "--model", str(run), "--format", "csv"], delay,
                        tmp_path)
    if done.returncode == 0:
        pytest.skip(f"predict finished within {delay} s")
    assert done.returncode == 130, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), done.stderr


def test_ctrl_c_while_a_training_builds_its_model_prints_the_resume_command(
    tiny_run: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = tiny_run
    proc = subprocess.Popen(
        [sys.executable, "-m", "leukocli", "train", "--train", str(data), "--val", str(data),
         "--backbone", "compact", "--img", "75x75", "--epochs", "2", "--out", "r"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.stderr is not None
    for line in proc.stderr:  # the run folder is made; the model is being built now
        if line.startswith("training compact"):
            proc.send_signal(signal.SIGINT)
            break
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest
    assert rest.strip().splitlines()[-1].endswith("leuko train --resume --out r"), rest
    assert "Traceback" not in rest


# --------------------------------------------------------------------------- 6. latest
def test_a_latest_link_the_user_made_is_never_moved(tiny_run: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    data, _ = tiny_run
    runs = tmp_path / "runs"
    runs.mkdir()
    (tmp_path / "somewhere").mkdir()
    os.symlink(tmp_path / "somewhere", runs / "latest")
    done = invoke("train", "--train", str(data), "--val", str(data), "--backbone", "compact",
                  "--img", "75x75", "--epochs", "1", "--precision", "float32",
                  "--out", str(runs / "r1"))
    assert done.code == 0, done.stderr
    assert os.readlink(runs / "latest") == str(tmp_path / "somewhere")
    assert "is a link leuko did not create; left it alone" in done.stderr
    # the link leuko makes itself does move with each new run
    os.unlink(runs / "latest")
    for name in ("r2", "r3"):
        done = invoke("train", "--train", str(data), "--val", str(data), "--backbone",
                      "compact", "--img", "75x75", "--epochs", "1", "--precision", "float32",
                      "--out", str(runs / name))
        assert done.code == 0, done.stderr
        assert os.readlink(runs / "latest") == name


# --------------------------------------------------------------------------- 7. pixels
def _deep_and_turned(tmp_path: Path) -> dict[str, Path]:
    """One picture saved five ways: 8-bit PNG, 16-bit grey PNG and TIFF, and a JPEG whose
    pixels lie on their side with an EXIF orientation saying so (as phones save them)."""
    rng = np.random.default_rng(3)
    grey8 = (rng.integers(40, 200, (48, 64))).astype(np.uint8)
    grey8 = np.repeat(np.repeat(grey8[::8, ::8], 8, 0), 8, 1)  # blocks survive JPEG
    out = {"png8": tmp_path / "g8.png", "png16": tmp_path / "g16.png",
           "tif16": tmp_path / "g16.tif", "upright": tmp_path / "up.jpg",
           "turned": tmp_path / "turned.jpg"}
    Image.fromarray(grey8).save(out["png8"])
    deep = grey8.astype(np.uint16) * 257
    Image.fromarray(deep).save(out["png16"])
    Image.fromarray(deep).save(out["tif16"])
    rgb = Image.fromarray(grey8).convert("RGB")
    rgb.save(out["upright"], quality=98)
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to view"
    rgb.transpose(Image.Transpose.ROTATE_90).save(out["turned"], quality=98, exif=exif)
    return out


def test_16_bit_and_exif_turned_images_read_the_same_everywhere(tmp_path: Path) -> None:
    import tensorflow as tf

    from leukocli.curation.hashing import hash_image
    from leukocli.data.images import open_rgb
    from leukocli.modeling.loader import build_dataset
    from leukocli.modeling.runtimes import load_images

    files = _deep_and_turned(tmp_path)
    want = np.asarray(open_rgb(files["png8"]), np.float32)
    assert want.mean() < 200  # not white
    paths = [str(files[k]) for k in ("png8", "png16", "tif16")]
    loader = np.concatenate([b.numpy() for b in build_dataset(paths, None, (48, 64), 8)])
    runtime = load_images(paths, (48, 64))
    for got in (*loader, *runtime):
        np.testing.assert_allclose(got, want, atol=1.0)
    up = np.asarray(open_rgb(files["upright"]), np.float32)
    turned = [str(files["turned"])]
    for got in (next(iter(build_dataset(turned, None, (48, 64), 1)))[0].numpy(),
                load_images(turned, (48, 64))[0], np.asarray(open_rgb(files["turned"]))):
        assert np.abs(got - up).mean() < 3.0  # upright, as the phone showed it
    gray = {k: hash_image(files[k]).gray for k in ("png8", "png16", "tif16")}  # type: ignore[union-attr]
    assert np.abs(gray["png16"].astype(int) - gray["png8"]).max() <= 1
    assert np.abs(gray["tif16"].astype(int) - gray["png8"]).max() <= 1
    del tf


def test_a_16_bit_image_is_not_predicted_as_a_white_one(tiny_run: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    _, run = tiny_run
    files = _deep_and_turned(tmp_path)
    done = invoke("predict", str(files["png8"]), str(files["tif16"]), "--model", str(run),
                  "--format", "json")
    assert done.code == 0, done.stderr
    probs = [r["probabilities"] for r in json.loads(done.stdout)]
    # the same picture, 8 or 16 bits deep, gets the same answer (a 16-bit one clipped
    # to 255 would be read as white: the pixels themselves are compared in the test above;
    # a tiny model's answer for white can be too close to a grey picture's to tell)
    assert probs[0] == pytest.approx(probs[1], abs=2e-3)


# --------------------------------------------------------------------------- 8. explain
def test_explain_never_replaces_a_file_it_did_not_write(tiny_run: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    data, run = tiny_run
    image = next(data.glob("*/*.jpeg"))
    out = tmp_path / "explain"
    out.mkdir()
    mine = out / f"0000-{image.stem}-gradcam.png"
    mine.write_bytes(b"my own figure")
    done = invoke("explain", str(image), "--model", str(run), "--out", str(out),
                  "--format", "json")
    assert done.code == 0, done.stderr
    assert mine.read_bytes() == b"my own figure"
    written = Path(json.loads(done.stdout)[0]["gradcam"])
    assert written.name == f"0000-{image.stem}-gradcam~1.png" and written.is_file()
    again = invoke("explain", str(image), "--model", str(run), "--out", str(out),
                   "--format", "json")  # a rerun replaces its own figure, not a third name
    assert Path(json.loads(again.stdout)[0]["gradcam"]) == written
    assert sorted(p.name for p in out.iterdir()) == sorted([mine.name, written.name])


# --------------------------------------------------------------------------- 9, 12, 13
def _bomb(path: Path) -> None:
    """A PNG whose header claims 20000x20000 pixels (Pillow refuses to decode it)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def test_count_skips_a_decompression_bomb_and_counts_the_rest(
    tiny_run: tuple[Path, Path], tmp_path: Path
) -> None:
    data, run = tiny_run
    photos = tmp_path / "photos"
    photos.mkdir()
    _bomb(photos / "big.png")
    shutil.copy(next(data.glob("*/*.jpeg")), photos / "ok.jpeg")
    done = invoke("count", str(photos), "--model", str(run), "--out", str(tmp_path / "c"),
                  "--format", "json")
    done.one_line_error(1, "1 photo(s) could not be counted")
    assert "big.png: too large to decode safely" in done.stderr
    assert list(json.loads(done.stdout)["photos"]) == [str(photos / "ok.jpeg")]
    invoke("count", str(photos / "big.png"), "--model", str(run), "--out",
           str(tmp_path / "c2")).one_line_error(2, "none of the photos is readable")


def test_count_eval_refuses_a_malformed_or_missing_annotation_before_counting(
    tiny_run: tuple[Path, Path], tmp_path: Path
) -> None:
    data, run = tiny_run
    (tmp_path / "voc" / "JPEGImages").mkdir(parents=True)
    (tmp_path / "voc" / "Annotations").mkdir()
    shutil.copy(next(data.glob("*/*.jpeg")), tmp_path / "voc" / "JPEGImages" / "a.jpg")
    args = ("count", str(tmp_path / "voc" / "JPEGImages"), "--model", str(run), "--eval",
            "--out", str(tmp_path / "c"))
    invoke(*args).one_line_error(2, "none of the photos has a Pascal VOC annotation")
    (tmp_path / "voc" / "Annotations" / "a.xml").write_text("<annotation><object>")
    invoke(*args).one_line_error(2, "a.xml is not a readable Pascal VOC annotation")
    (tmp_path / "voc" / "Annotations" / "a.xml").write_text(
        "<annotation><object><name>WBC</name><bndbox><xmin>x</xmin></bndbox></object>"
        "</annotation>")
    invoke(*args).one_line_error(2, "is not a number")
    assert not (tmp_path / "c").exists()


def test_an_input_size_no_batch_fits_is_refused_before_the_run_folder(
    tiny_run: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = tiny_run
    invoke("train", "--train", str(data), "--val", str(data), "--backbone", "compact",
           "--img", "100000x100000", "--out", str(tmp_path / "r")).one_line_error(
        2, "needs about", "GB for one batch", "use a smaller --img or --batch")
    assert not (tmp_path / "r").exists()


def test_demo_into_a_file_and_undo_from_a_read_only_quarantine_are_one_line(
    applied: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    (tmp_path / "afile").write_text("mine")
    invoke("demo", str(tmp_path / "afile")).one_line_error(2, "is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "mine"
    root, manifest, _ = applied
    with _tmpfs(tmp_path / "ro", "size=16m") as where:
        shutil.copytree(manifest.parent, where / "q")
        moved = where / "q" / manifest.name
        text = moved.read_text().replace(str(manifest.parent), str(where / "q"))
        moved.write_text(text)
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        before = tree_digest(tmp_path / "data")
        invoke("dedupe", "--undo", str(moved)).one_line_error(2, "nothing was restored")
        assert tree_digest(tmp_path / "data") == before


def test_one_class_and_nan_labels_are_refused_before_anything_is_written(
    tmp_path: Path
) -> None:
    make_dataset(tmp_path / "d", per_class=3, size=(48, 48), seed=1, plant=False)
    one = tmp_path / "one"
    shutil.copytree(tmp_path / "d" / "LYMPHOCYTE", one / "LYMPHOCYTE")
    for args in (("split", str(one), "--out", str(tmp_path / "s")),
                 ("cv", str(one), "--out", str(tmp_path / "cv"), "--backbone", "compact",
                  "--img", "48x48", "--epochs", "1")):
        invoke(*args).one_line_error(2, "holds 1 class (LYMPHOCYTE)", "needs at least 2")
    assert not (tmp_path / "s").exists() and not (tmp_path / "cv").exists()
    images = sorted((tmp_path / "d").glob("*/*.jpeg"))
    rows = ["path,label", f"{images[0]},NaN", f"{images[1]},null",
            *(f"{p},{p.parent.name}" for p in images[2:])]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    done = invoke("split", str(tmp_path / "m.csv"), "--group-by", "none", "--out",
                  str(tmp_path / "s2"))
    assert done.code == 0, done.stderr
    assert "missing label ('NaN'" in done.stderr
    classes = json.loads((tmp_path / "s2" / "classes.json").read_text())
    assert not {"NaN", "null"} & set(classes if isinstance(classes, list) else classes.values())


def test_a_second_split_into_a_busy_folder_is_refused_before_it_scans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leukocli._util.files import output_lock
    from leukocli.curation import split

    make_dataset(tmp_path / "d", per_class=3, size=(48, 48), seed=1, plant=False)

    def no_scan(*a: object, **k: object) -> None:
        raise AssertionError("scanned although the output was busy")

    monkeypatch.setattr(split, "load_grouped", no_scan)
    with output_lock(tmp_path / "s", "leuko split"):
        invoke("split", str(tmp_path / "d"), "--out", str(tmp_path / "s")).one_line_error(
            2, "is in use by another leuko run")


@pytest.mark.parametrize(("args", "fragment"), [
    (("dedupe", ""), "an empty argument ('' after dedupe)"),
    (("train", "--resume", "--out", "no-such-run"), "there is no run at no-such-run"),
    (("split", "d", "--group-by", "column:nope", "--out", "s"), "a folder has no columns"),
])
def test_messages_say_what_is_wrong(args: tuple[str, ...], fragment: str,
                                    tmp_path: Path) -> None:
    make_dataset(tmp_path / "d", per_class=3, size=(48, 48), seed=1, plant=False)
    invoke(*args, cwd=tmp_path).one_line_error(2, fragment)
