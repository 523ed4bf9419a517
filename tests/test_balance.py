"""`--balance-by COLUMN`: two labs (or sites) in one training manifest weigh alike."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import invoke

from leukocli.data.balance import oversample
from leukocli.data.dataset import scan
from leukocli.errors import ParameterError
from leukocli.training.options import TrainOptions
from leukocli.training.run import load_inputs


def _manifest(root: Path, data: Path, name: str, site_of: dict[str, str] | None) -> Path:
    """A manifest of `data` (class folders) with a site column: the first image of each
    class is site "b", the rest "a" (or `site_of` by file name)."""
    rows = []
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        for i, f in enumerate(sorted(folder.glob("*.jpeg"))):
            site = (site_of or {}).get(f.name, "b" if i == 0 else "a")
            rows.append({"path": str(f), "label": folder.name, "site": site})
    out = root / name
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "site"])
        w.writeheader()
        w.writerows(rows)
    return out


def test_smaller_site_is_repeated_to_the_larger_ones_count(tiny_dataset, tmp_path: Path) -> None:
    data = tiny_dataset(per_class=4)
    ds = scan(_manifest(tmp_path, data, "m.csv", None), check="none")
    n_classes = len(ds.classes)
    balanced, times = oversample(ds, "site")
    assert times == {"a": 1, "b": 3}  # 3 rows of a per class against 1 of b
    assert balanced.records[: len(ds.records)] == ds.records  # the originals first, in order
    extra = balanced.records[len(ds.records):]
    assert len(extra) == 2 * n_classes and {r.extra["site"] for r in extra} == {"b"}
    sites = [r.extra["site"] for r in balanced.records]
    assert sites.count("a") == sites.count("b")
    assert balanced.classes == ds.classes


def test_training_inputs_are_balanced_and_recorded(tiny_dataset, tmp_path: Path) -> None:
    data = tiny_dataset(per_class=4)
    train = _manifest(tmp_path, data, "train.csv", None)
    opts = TrainOptions(train_csv=str(train), val_csv="none", balance_by="site")
    inputs = load_inputs(opts)
    plain = load_inputs(TrainOptions(train_csv=str(train), val_csv="none"))
    n = len(plain.train.records)
    assert len(inputs.train.records) == n + 2 * len(plain.classes)
    record = inputs.manifests["train"]
    assert record["balanced"] == {"by": "site", "times": {"a": 1, "b": 3},
                                  "rows": len(inputs.train.records)}
    # the manifest as written is what the fingerprint and row count describe
    assert record["rows"] == n and record["fingerprint"] == plain.manifests["train"]["fingerprint"]
    assert json.loads(json.dumps(opts.to_json()))["balance_by"] == "site"


def test_missing_column_or_value_is_a_parameter_error(tiny_dataset, tmp_path: Path) -> None:
    data = tiny_dataset(per_class=2)
    ds = scan(_manifest(tmp_path, data, "m.csv", None), check="none")
    with pytest.raises(ParameterError) as err:
        oversample(ds, "lab")
    assert err.value.parameter == "balance_by" and isinstance(err.value, ValueError)
    assert str(err.value).startswith("balance_by='lab': ") and "has no column 'lab'" in str(
        err.value)
    for own in ("label", "group"):
        with pytest.raises(ParameterError, match="leuko reads"):
            oversample(ds, own)
    blank = {f.name: "" for f in data.rglob("*.jpeg")}
    ds = scan(_manifest(tmp_path, data, "blank.csv", blank), check="none")
    with pytest.raises(ParameterError, match="have no 'site' value"):
        oversample(ds, "site")


def test_cli_refuses_a_folder_in_one_line(tiny_dataset) -> None:
    data = tiny_dataset(per_class=2)
    run = invoke("train", "--train", str(data), "--val", "none", "--backbone", "compact",
                 "--img", "64x64", "--epochs", "1", "--balance-by", "site")
    run.one_line_error(2, "--balance-by site needs a CSV manifest with that column")


def test_split_keeps_the_manifests_own_columns(tiny_dataset, tmp_path: Path) -> None:
    data = tiny_dataset(per_class=6)
    manifest = _manifest(tmp_path, data, "m.csv", None)
    out = tmp_path / "splits"
    run = invoke("split", str(manifest), "--out", str(out), "--group-by", "none")
    assert run.code == 0, run.stderr
    with (out / "train.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["site"] for r in rows} <= {"a", "b"}
    inputs = load_inputs(TrainOptions(train_csv=str(out / "train.csv"),
                                      val_csv=str(out / "val.csv"), balance_by="site"))
    assert inputs.manifests["train"]["balanced"]["by"] == "site"


def test_cv_folds_keep_the_column_for_each_folds_training(tiny_dataset, tmp_path: Path) -> None:
    from leukocli.training.cv import CVPlan, fold_dir, prepare

    data = tiny_dataset(per_class=6)
    manifest = _manifest(tmp_path, data, "m.csv", None)
    options = TrainOptions(backbone="compact", balance_by="site")
    run = tmp_path / "cv"
    prepare(run, CVPlan(str(manifest), 2, "none", None, 1, options))
    for k in range(2):
        part = fold_dir(run, k) / "train.csv"
        inputs = load_inputs(TrainOptions(train_csv=str(part), val_csv="none",
                                          balance_by="site"))
        assert inputs.manifests["train"]["balanced"]["times"]["a"] == 1

