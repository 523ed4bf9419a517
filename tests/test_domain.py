"""Any microscope: the domain layers, a shipped classifier by name and as the default,
few-shot training with no validation part from an earlier run, and evaluation among
the data's classes (issue 28). Tiny synthetic data and tiny models only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke


def test_stain_norm_brings_a_pale_and_a_dark_stain_to_one_strength() -> None:
    from leukocli.modeling.layers import ColorBalance, StainNorm

    rng = np.random.default_rng(0)
    base = np.full((1, 48, 48, 3), 235.0, np.float32)
    nucleus = np.zeros((48, 48), bool)
    nucleus[16:32, 16:32] = True
    od = np.array([0.9, 1.2, 0.4], np.float32)  # purple: absorbs red and green
    pale, dark = base.copy(), base.copy()
    for img, strength in ((pale, 0.4), (dark, 1.6)):
        img[0][nucleus] = 256.0 * np.exp(-(od * strength - np.log(236 / 256))) - 1
        img += rng.normal(0, 1, img.shape).astype(np.float32)
    # a yellow lamp on the pale one: ColorBalance takes it out first
    pale = np.clip(pale * np.array([1.0, 0.95, 0.7], np.float32), 0, 255)
    out = [np.asarray(StainNorm()(ColorBalance()(x))) for x in (pale, dark)]
    n_pale, n_dark = (o[0][nucleus].mean(axis=0) for o in out)
    assert np.abs(n_pale - n_dark).max() < 12, (n_pale, n_dark)  # was > 100 apart
    assert abs(float(out[0][0, 2, 2].mean()) - 235) < 6  # background stays grey


def _tiny_source(root: Path, tiny_dataset, recipe: str = "domain") -> Path:
    data = tiny_dataset(per_class=3, size=(60, 80), name=f"{recipe}-data")
    run = root / recipe
    r = invoke("train", "--train", str(data), "--val", "none", "--backbone", "compact",
               "--recipe", recipe, "--img", "60x80", "--batch", "8", "--epochs", "1",
               "--crop-cell", "32", "--out", str(run))
    assert r.code == 0, r.stderr
    return run


def test_val_none_trains_a_fixed_schedule_and_few_shot_starts_from_the_run(
        tmp_path: Path, tiny_dataset) -> None:
    run = _tiny_source(tmp_path, tiny_dataset)
    meta = json.loads((run / "leuko.json").read_text())
    assert meta["status"] == "finished" and meta["options"]["keep"] == "last"
    assert meta["balance"] and meta["stain_norm"] and meta["options"]["val_csv"] == "none"
    # a new lab's few cells, its class folders in lower case and only two of the classes
    few = tmp_path / "few"
    src = tiny_dataset(per_class=2, size=(60, 80), seed=5, name="few-src")
    for c in ("EOSINOPHIL", "MONOCYTE"):
        shutil.copytree(src / c, few / c.lower())
    r = invoke("train", "--train", str(few), "--val", "none", "--weights", str(run),
               "--img", "60x80", "--batch", "8", "--epochs", "2", "--out",
               str(tmp_path / "adapted"))
    assert r.code == 0, r.stderr
    assert "no validation part" in r.stdout
    adapted = json.loads((tmp_path / "adapted" / "leuko.json").read_text())
    # no --backbone or --recipe needed: both come from the run it starts from
    assert adapted["backbone"] == "compact" and adapted["recipe"] == "domain"
    assert adapted["crop_cell"] == 32 and adapted["stain_norm"]
    assert adapted["head_from"] == ["eosinophil", "monocyte"]


def test_cpu_balance_carries_the_background_balance_alone(tmp_path: Path,
                                                         tiny_dataset) -> None:
    """`--recipe cpu-balance`: the cpu recipe with ColorBalance inside the saved model
    and no StainNorm, the stain normalisation that cost the other lab."""
    import keras

    import leukocli.modeling.layers  # noqa: F401  (registers leuko's layers)

    run = _tiny_source(tmp_path, tiny_dataset, "cpu-balance")
    meta = json.loads((run / "leuko.json").read_text())
    assert meta["recipe"] == "cpu-balance" and meta["augment_policy"] == "strong"
    assert meta["balance"] and not meta["stain_norm"]
    model = keras.models.load_model(run / "model.keras", compile=False)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "ColorBalance" in kinds and "StainNorm" not in kinds, kinds


def test_keep_best_needs_a_validation_part(tmp_path: Path, tiny_dataset) -> None:
    data = tiny_dataset(per_class=2, size=(60, 80))
    r = invoke("train", "--train", str(data), "--val", "none", "--keep", "best",
               "--backbone", "compact", "--img", "60x80", "--out", str(tmp_path / "r"))
    r.one_line_error(2, "--keep best", "--val none")
    assert not (tmp_path / "r").exists()


def test_head_rows_of_shared_classes_are_copied(tiny_run: tuple[Path, Path]) -> None:
    from leukocli.modeling.bundle import load_bundle
    from leukocli.modeling.model import build_model, start_head_from

    _, run = tiny_run
    source = load_bundle(run)
    model = build_model("compact", source.img_size, 3, crop_cell=0, head_filters=16)
    classes = ["monocyte", "BASOPHIL", source.classes[0]]
    matched = start_head_from(model, run, classes)
    assert matched == ["monocyte", source.classes[0]]
    kernel, _ = model.get_layer("logits").get_weights()
    theirs, _ = source.model.get_layer("logits").get_weights()
    np.testing.assert_array_equal(kernel[:, 0], theirs[:, source.classes.index("MONOCYTE")])
    np.testing.assert_array_equal(kernel[:, 2], theirs[:, 0])
    assert not np.array_equal(kernel[:, 1], theirs[:, 1])  # a class it never knew: fresh


@pytest.fixture
def shipped_dir(tmp_path: Path, tiny_run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
                ) -> Path:
    """A package weights folder holding a tiny run as the shipped classifier `wbc`."""
    from leukocli.modeling import shipped

    weights = tmp_path / "weights"
    shutil.copytree(tiny_run[1], weights / "wbc")
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", weights)
    return weights


def test_shipped_classifier_by_name_and_as_the_default(
        tmp_path: Path, tiny_run: tuple[Path, Path], shipped_dir: Path) -> None:
    data, _ = tiny_run
    image = str(next((data / "MONOCYTE").glob("*.png"), None)
                or next((data / "MONOCYTE").iterdir()))
    work = tmp_path / "work"
    work.mkdir()
    named = invoke("predict", image, "--model", "wbc", "--format", "json", cwd=work)
    assert named.code == 0, named.stderr
    default = invoke("predict", image, "--format", "json", cwd=work)
    assert default.code == 0, default.stderr
    assert json.loads(default.stdout) == json.loads(named.stdout)
    said = [line for line in default.stderr.splitlines() if "shipped classifier wbc" in line]
    assert len(said) == 1 and "runs/latest" in said[0]
    # evaluate writes beside the run, but never into the installed package
    ev = invoke("evaluate", str(data), "--model", "wbc", cwd=work)
    assert ev.code == 0, ev.stderr
    assert (work / "wbc-evaluate" / "metrics.json").is_file()
    assert sorted(p.name for p in (shipped_dir / "wbc").iterdir()) == sorted(
        p.name for p in tiny_run[1].iterdir())
    # a run of the user's own wins over the shipped one, with nothing said
    (work / "runs").mkdir()
    shutil.copytree(tiny_run[1], work / "runs" / "mine")
    (work / "runs" / "latest").symlink_to("mine")
    own = invoke("predict", image, "--format", "json", cwd=work)
    assert own.code == 0 and "shipped" not in own.stderr


def test_evaluate_chooses_among_the_data_classes(tmp_path: Path,
                                                 tiny_run: tuple[Path, Path]) -> None:
    data, run = tiny_run
    two = tmp_path / "two"
    for c in ("EOSINOPHIL", "NEUTROPHIL"):
        shutil.copytree(data / c, two / c.lower())  # another lab's folder names
    r = invoke("evaluate", str(two), "--model", str(run), "--out", str(tmp_path / "e"))
    assert r.code == 0, r.stderr
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["classes_scored"] == ["EOSINOPHIL", "NEUTROPHIL"]
    assert np.asarray(m["confusion_matrix"]).shape == (2, 2)
    r = invoke("evaluate", str(two), "--model", str(run), "--all-classes", "--out",
               str(tmp_path / "all"))
    assert r.code == 0, r.stderr
    m_all = json.loads((tmp_path / "all" / "metrics.json").read_text())
    assert len(m_all["classes_scored"]) == 4
    assert m["accuracy"] >= m_all["accuracy"]


def test_the_shipped_classifier_loads_offline_with_its_card() -> None:
    """`--model wbc` right after install: in the package, at most 10 MB, credited, and a
    real leuko model (the loader's checks pass) in float32, as exports are."""
    from leukocli.modeling.bundle import load_bundle
    from leukocli.modeling.shipped import shipped_model

    run = shipped_model("wbc")
    assert run is not None
    assert (run / "model.keras").stat().st_size <= 10 * 2**20
    bundle = load_bundle(Path("wbc"))
    card = bundle.meta["card"]
    assert bundle.classes == ["BASOPHIL", "EOSINOPHIL", "ERYTHROBLAST", "IG", "LYMPHOCYTE",
                              "MONOCYTE", "NEUTROPHIL", "PLATELET"]
    assert "CC BY 4.0" in card["licence"] and any("Acevedo" in c for c in card["credit"])
    assert set(card["held_out"]) == {"pbc", "bc"} and card["reproduce"]
    assert "bfloat16" not in bundle.model.to_json()
    assert not any(str(v["path"]).startswith("/") for v in bundle.meta["manifests"].values())
