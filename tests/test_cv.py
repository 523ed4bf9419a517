"""`leuko cv`: grouped folds that never cut a group, one out-of-fold prediction per image,
fold jobs that add up to the full run, and the fold models as an ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import invoke

from leukocli.curation.folds import assign_folds
from leukocli.errors import LeukoError

TRAIN_ARGS = ("--backbone", "compact", "--img", "48x48", "--crop-cell", "0", "--epochs", "1",
              "--batch", "8", "--precision", "float32", "--seed", "3")


def test_folds_keep_groups_whole_and_class_shares_even() -> None:
    rng = np.random.default_rng(0)
    labels, groups = [], []
    for c, n_groups in (("A", 40), ("B", 25), ("C", 12)):
        for g in range(n_groups):
            size = int(rng.integers(2, 9))
            labels += [c] * size
            groups += [f"{c}{g}"] * size
    fold = assign_folds(labels, groups, folds=5, seed=1)
    frame = pd.DataFrame({"label": labels, "group": groups, "fold": fold})
    assert (frame.groupby("group").fold.nunique() == 1).all()  # no group in two folds
    assert sorted(frame.fold.unique()) == [0, 1, 2, 3, 4]
    whole = frame.label.value_counts(normalize=True)
    for _, part in frame.groupby("fold"):
        shares = part.label.value_counts(normalize=True)
        assert max(abs(shares.get(c, 0.0) - whole[c]) for c in whole.index) < 0.08
    again = assign_folds(labels, groups, folds=5, seed=1)
    np.testing.assert_array_equal(fold, again)  # same seed, same folds
    with pytest.raises(LeukoError, match="need at least 5 groups"):
        assign_folds(["A"] * 4, ["g1", "g2", "g3", "g4"], folds=5)


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A planted synthetic dataset and a full 2-fold cv run of it."""
    from leukocli.data.synth import make_dataset

    root = tmp_path_factory.mktemp("cv")
    make_dataset(root / "data", per_class=4, size=(48, 48), seed=5, siblings=2, plant=True)
    done = invoke("cv", str(root / "data"), "--folds", "2", "--out", str(root / "full"),
                  *TRAIN_ARGS)
    assert done.code == 0, done.stderr
    assert "per fold" in done.stdout and "accuracy per image" in done.stdout
    return root / "data", root / "full"


def test_every_image_gets_one_out_of_fold_prediction(cv_run: tuple[Path, Path]) -> None:
    data, run = cv_run
    folds = pd.read_csv(run / "folds.csv")
    oof = pd.read_csv(run / "oof.csv")
    assert sorted(oof.path) == sorted(folds.path)  # each image once, none missing
    assert len(oof) == oof.path.nunique()
    assert (folds.groupby("group").fold.nunique() == 1).all()
    for k in (0, 1):
        held_out = set(pd.read_csv(run / f"fold-{k}" / "val.csv").path)
        trained_on = set(pd.read_csv(run / f"fold-{k}" / "train.csv").path)
        assert not held_out & trained_on
        assert held_out == set(oof[oof.fold == k].path)
    probs = oof[[c for c in oof.columns if c.startswith("prob_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    m = json.loads((run / "cv.json").read_text())["metrics"]
    assert m["n"] == len(oof)
    assert m["accuracy"] == pytest.approx(float((oof.predicted == oof.label).mean()))
    per_fold = [float((p.predicted == p.label).mean()) for _, p in oof.groupby("fold")]
    assert m["folds"]["accuracy"] == pytest.approx(per_fold)
    assert m["folds"]["std"] == pytest.approx(float(np.std(per_fold, ddof=1)))
    assert m["n_groups"] == folds.group.nunique()
    assert (run.parent / "latest").resolve() == run.resolve()


def test_fold_jobs_then_continue_and_collect_equal_the_full_run(
    cv_run: tuple[Path, Path], tmp_path: Path
) -> None:
    data, full = cv_run
    run = tmp_path / "jobs"
    one = invoke("cv", str(data), "--folds", "2", "--out", str(run), "--fold", "0", *TRAIN_ARGS)
    assert one.code == 0, one.stderr
    assert "1 of 2 folds done" in one.stdout and not (run / "oof.csv").exists()
    invoke("cv", "--collect", str(run)).one_line_error(2, "fold(s) 1", "not finished")
    rest = invoke("cv", "--out", str(run))  # continues with the saved plan: fold 1, collect
    assert rest.code == 0, rest.stderr
    assert (run / "oof.csv").read_text() == (full / "oof.csv").read_text()
    again = invoke("cv", "--collect", str(run))
    assert again.code == 0, again.stderr
    assert (run / "oof.csv").read_text() == (full / "oof.csv").read_text()
    other = invoke("cv", str(data), "--folds", "3", "--out", str(run), *TRAIN_ARGS)
    other.one_line_error(2, "holds a cv run with --folds 2, not 3")


def test_the_ensemble_is_the_mean_of_the_fold_models(cv_run: tuple[Path, Path]) -> None:
    from leukocli.evaluation.predict import predict_probs
    from leukocli.modeling.bundle import load_bundle

    data, run = cv_run
    images = [Path(p) for p in pd.read_csv(run / "oof.csv").path[:6]]
    ensemble = predict_probs(load_bundle(run), images)
    members = [predict_probs(load_bundle(run / f"fold-{k}"), images) for k in (0, 1)]
    np.testing.assert_allclose(ensemble, np.mean(members, axis=0), atol=1e-5)
    done = invoke("predict", str(images[0]), "--model", str(run), "--format", "json",
                  "--tta", "2")
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout)[0]["predicted"] in {"EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE",
                                                       "NEUTROPHIL"}
