"""`leuko cv`: grouped folds that never cut a group, one out-of-fold prediction per image,
fold jobs that add up to the full run, and the fold models as an ensemble."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import invoke

from leukocli.curation.folds import assign_folds
from leukocli.errors import LeukoError

TRAIN_ARGS = ("--backbone", "compact", "--img", "120x160", "--crop-cell", "48", "--epochs", "8",
              "--batch", "8", "--precision", "float32", "--seed", "3")
FLIPPED = 3  # whole groups (a smear and its siblings) filed under another class


def test_new_runs_are_named_by_one_helper() -> None:
    """train, cv and audit's own cv name a new run folder one way: runs sort by start."""
    from leukocli.training.options import new_run_dir

    stamp = r"\d{8}-\d{6}"
    for run, pattern in ((new_run_dir("compact"), f"{stamp}-compact"),
                         (new_run_dir("compact", "cv"), f"cv-{stamp}-compact"),
                         (new_run_dir(prefix="audit-cv"), f"audit-cv-{stamp}")):
        assert run.parent == Path("runs") and re.fullmatch(pattern, run.name), run


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


def _flipped_manifest(data: Path, n: int) -> tuple[Path, list[str]]:
    """A manifest of `data` (group = the smear each image shows) in which every sibling of
    `n` smears carries the next class's label: planted whole-group label errors."""
    sources = pd.read_csv(data / "sources.csv")
    sources["label"] = [rel.split("/")[0] for rel in sources.file]
    classes = sorted(sources.label.unique())
    flipped = sorted(sources.source.unique())[1 : 1 + 7 * n : 7]
    for k, source in enumerate(flipped):
        rows = sources.source == source
        old = sources.loc[rows, "label"].iloc[0]
        sources.loc[rows, "label"] = classes[(classes.index(old) + 1 + k) % len(classes)]
    manifest = data.parent / "data.csv"
    pd.DataFrame({"path": [str(data / f) for f in sources.file], "label": sources.label,
                  "group": sources.source}).to_csv(manifest, index=False)
    return manifest, list(flipped)


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A manifest with planted whole-group label errors, and a 2-fold cv run of it."""
    from leukocli.data.synth import make_dataset

    root = tmp_path_factory.mktemp("cv")
    make_dataset(root / "data", per_class=10, size=(120, 160), seed=5, siblings=3, plant=False)
    manifest, flipped = _flipped_manifest(root / "data", FLIPPED)
    (root / "flipped.json").write_text(json.dumps(flipped))
    done = invoke("cv", str(manifest), "--folds", "2", "--out", str(root / "full"), *TRAIN_ARGS)
    assert done.code == 0, done.stderr
    assert "per fold" in done.stdout and "accuracy per image" in done.stdout
    return manifest, root / "full"


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


def test_a_fold_job_then_collect_equals_the_full_run(
    cv_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """A run with one fold missing (another machine's job, or Ctrl-C) is finished with
    --fold and --collect, and gives the same oof.csv as the full run (same seed)."""
    import shutil

    manifest, full = cv_run
    run = tmp_path / "jobs"
    shutil.copytree(full, run, ignore=shutil.ignore_patterns("fold-1"))
    shutil.copytree(full / "fold-1", run / "fold-1",
                    ignore=shutil.ignore_patterns("model.keras", "leuko.json", "history.csv",
                                                  "oof.csv", "curves.png"))
    (run / "oof.csv").unlink()
    invoke("cv", "--collect", str(run)).one_line_error(2, "fold(s) 1", "not finished")
    one = invoke("cv", "--out", str(run), "--fold", "1")  # the saved plan: no DATA needed
    assert one.code == 0, one.stderr
    assert "fold 0: done already" not in one.stderr  # --fold 1 touches fold 1 only
    assert "2 of 2 folds done" in one.stdout and "collect with" in one.stdout
    done = invoke("cv", "--collect", str(run))
    assert done.code == 0, done.stderr
    assert (run / "oof.csv").read_text() == (full / "oof.csv").read_text()
    other = invoke("cv", str(manifest), "--folds", "3", "--out", str(run), *TRAIN_ARGS)
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


def test_evaluating_the_ensemble_keeps_the_out_of_fold_figures(cv_run: tuple[Path, Path],
                                                                tmp_path: Path) -> None:
    manifest, run = cv_run
    copy = tmp_path / "cv"
    shutil.copytree(run, copy)
    before = (copy / "confusion.png").read_bytes()
    done = invoke("evaluate", str(manifest), "--model", str(copy))
    assert done.code == 0, done.stderr
    assert (copy / "confusion.png").read_bytes() == before
    assert json.loads((copy / "evaluate" / "metrics.json").read_text())["n"] == len(
        pd.read_csv(copy / "oof.csv"))


def test_audit_finds_the_planted_label_errors(cv_run: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, run = cv_run
    flipped = json.loads((run.parent / "flipped.json").read_text())
    before = manifest.read_bytes()
    done = invoke("audit", str(manifest), "--model", str(run), "--out", str(tmp_path / "a"),
                  "--top", "5", "--write-exclude", str(tmp_path / "issues.json"))
    assert done.code == 0, done.stderr
    groups = pd.read_csv(tmp_path / "a" / "audit_groups.csv", dtype={"group": str})
    assert set(flipped) <= set(groups.group.head(5)), groups.head(8)
    images = pd.read_csv(tmp_path / "a" / "audit.csv")
    assert len(images) == len(pd.read_csv(run / "oof.csv"))
    assert (tmp_path / "a" / "contact.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    issues = json.loads((tmp_path / "issues.json").read_text())
    assert all(g["conflict"] for g in issues["groups"])
    assert manifest.read_bytes() == before  # audit never changes the data
    # the exclude list is what split --exclude takes: the top 5 suspect groups are left out
    done = invoke("split", str(manifest), "--group-by", "none", "--exclude",
                  str(tmp_path / "issues.json"), "--out", str(tmp_path / "s"))
    assert done.code == 0, done.stderr
    kept = {str(Path(q).resolve()) for f in ("train.csv", "val.csv")
            for q in pd.read_csv(tmp_path / "s" / f).path}
    top_suspects = set(groups[groups.suspect].group.head(5))
    assert set(flipped) <= top_suspects
    suspects = images[images.group.astype(str).isin(top_suspects)]
    assert kept and not kept & {str(Path(q).resolve()) for q in suspects.path}
    assert len(kept) == len(images) - len(suspects)


def test_audit_skips_what_the_cv_run_excluded(cv_run: tuple[Path, Path], tmp_path: Path
                                              ) -> None:
    """`leuko cv DATA --exclude dedupe.json` then `leuko audit DATA --model RUN`: the
    excluded images have no out-of-fold prediction and are left out, not an error."""
    manifest, run = cv_run
    copy = tmp_path / "cv"
    shutil.copytree(run, copy)
    oof = pd.read_csv(copy / "oof.csv")
    gone = oof.iloc[0]
    oof.iloc[1:].to_csv(copy / "oof.csv", index=False)
    rel = Path(gone.path).resolve().relative_to(manifest.parent.resolve()).as_posix()
    report = tmp_path / "dedupe.json"
    report.write_text(json.dumps({"groups": [{"files": [rel], "conflict": True}]}))
    plan = json.loads((copy / "cv.json").read_text())
    (copy / "cv.json").write_text(json.dumps({**plan, "exclude": str(report)}))
    done = invoke("audit", str(manifest), "--model", str(copy), "--out", str(tmp_path / "a"),
                  env={"LEUKO_QUIET": ""})
    assert done.code == 0, done.stderr
    assert "1 image(s) the cv run left out" in done.stderr
    assert len(pd.read_csv(tmp_path / "a" / "audit.csv")) == len(oof) - 1
    (copy / "cv.json").write_text(json.dumps(plan))  # without the exclude: a wrong dataset
    invoke("audit", str(manifest), "--model", str(copy)).one_line_error(
        2, "1 image(s) of")
    invoke("audit", str(manifest), "--model", str(copy), "--folds", "3", "--epochs", "2",
           "--no-augment").one_line_error(
        2, "--folds, --epochs, --augment/--no-augment only apply when audit runs the cross-")


def test_report_is_one_self_contained_html_file(cv_run: tuple[Path, Path], tmp_path: Path
                                                ) -> None:
    import base64
    from html.parser import HTMLParser

    _, run = cv_run
    done = invoke("report", str(run), "--out", str(tmp_path / "r.html"))
    assert done.code == 0, done.stderr

    class Page(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.ids: set[str] = set()
            self.images: list[str] = []
            self.links: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if a.get("id"):
                self.ids.add(str(a["id"]))
            if tag == "img":
                self.images.append(str(a.get("src")))
            if tag in ("script", "link") or (tag == "a" and "href" in a):
                self.links.append(tag)

    page = Page()
    html = (tmp_path / "r.html").read_text()
    page.feed(html)
    assert "<h2>Data</h2>" in html and "fold 1 val" in html  # each fold's data fingerprint
    assert {"summary", "run", "curves", "confusion", "calibration", "groups",
            "mistakes"} <= page.ids
    assert page.images and not page.links  # no scripts, no stylesheets, no network
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_map_renames_classes_in_the_fold_manifests(tmp_path: Path) -> None:
    """--map applies before the folds are drawn: folds.csv, the fold manifests and so the
    fold models and oof.csv all speak the mapped names."""
    from leukocli.data.synth import make_dataset
    from leukocli.training.cv import CVPlan, prepare
    from leukocli.training.options import TrainOptions

    make_dataset(tmp_path / "data", per_class=6, size=(40, 40), seed=2, plant=False)
    mapping = ("EOSINOPHIL=GRANULOCYTE", "NEUTROPHIL=GRANULOCYTE")
    plan = CVPlan(str(tmp_path / "data"), 2, "auto", None, 1, TrainOptions(mapping=mapping))
    table = prepare(tmp_path / "run", plan)
    assert sorted(table.label.unique()) == ["GRANULOCYTE", "LYMPHOCYTE", "MONOCYTE"]
    val = pd.read_csv(tmp_path / "run" / "fold-0" / "val.csv")
    assert "GRANULOCYTE" in set(val.label) and "EOSINOPHIL" not in set(val.label)
    with pytest.raises(LeukoError, match="trained with mapping"):
        prepare(tmp_path / "run", CVPlan(str(tmp_path / "data"), 2, "auto", None, 1,
                                         TrainOptions()))


def test_a_fold_job_of_a_saved_plan_is_checked_against_its_own_fold_count(
    tiny_dataset, tmp_path: Path
) -> None:
    """`leuko cv --out RUN --fold 7` continues fold 7 of a saved 10-fold plan (what the
    collect step tells a user to run), whatever the --folds default is."""
    from leukocli.errors import ParameterError
    from leukocli.training.cv import CVPlan, plan_run, prepare
    from leukocli.training.options import TrainOptions

    data = tiny_dataset(per_class=10)
    run = tmp_path / "cv10"
    options = TrainOptions(backbone="compact")
    prepare(run, CVPlan(str(data), 10, "none", None, 1, options))
    common = {"out": run, "folds": 5, "group_by": "auto", "exclude": None, "tta": 1,
              "opts": options}
    _, plan = plan_run(None, fold=7, **common)
    assert plan.folds == 10
    with pytest.raises(ParameterError) as err:
        plan_run(None, fold=10, **common)
    assert err.value.parameter == "fold"
