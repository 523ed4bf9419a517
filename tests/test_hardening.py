"""Hostile input, round three: a shared model folder never runs code and a foreign model
is refused when it is loaded; a tampered or truncated undo manifest moves nothing. Each
case asserts the exit code, the one error line, and that no user file changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import pytest
from conftest import invoke, tree_digest

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
