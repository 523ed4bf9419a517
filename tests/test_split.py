"""`leuko split`: whole groups per split, stratified by class, repeatable, safe outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import invoke
from sklearn.metrics import adjusted_rand_score

from leukocli.curation.groups import resolve_groups
from leukocli.curation.split import run_split, split_dataset
from leukocli.data.dataset import scan
from leukocli.data.synth import make_dataset
from leukocli.errors import LeukoError


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEUKO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def sib_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 smears per class, 4 augmented views each, plus planted duplicates and conflicts."""
    out = tmp_path_factory.mktemp("sib") / "data"
    make_dataset(out, per_class=5, siblings=4, seed=3, plant=True)
    return out


def _read(out: Path) -> dict[str, pd.DataFrame]:
    return {
        s: pd.read_csv(out / f"{s}.csv")
        for s in ("train", "val", "test")
        if (out / f"{s}.csv").exists()
    }


def test_auto_rediscovers_planted_siblings(sib_data: Path) -> None:
    ds = scan(sib_data)
    groups = resolve_groups(ds, "auto")
    truth = pd.read_csv(sib_data / "sources.csv").set_index("file")["source"]
    src = [truth.get(r.rel, f"extra:{r.rel}") for r in ds.records]
    assert adjusted_rand_score(src, groups) > 0.85
    # no source photo is ever cut in two: that is what would leak
    frame = pd.DataFrame({"g": groups, "s": src})
    frame = frame[~frame.s.str.startswith("extra:")]
    assert (frame.groupby("s").g.nunique() == 1).all()
    # planted copies (near copies, and a copy filed under another class) join their original
    planted = json.loads((sib_data / "planted.json").read_text())
    gid = {r.rel: g for r, g in zip(ds.records, groups, strict=True)}
    for near in planted["near"]:
        assert gid[near["original"]] == gid[near["copy"]], near
    for pair in planted["conflict"] + planted["exact"]:
        assert len({gid[f] for f in pair}) == 1, pair
    # a second call is served from the cache and agrees
    assert resolve_groups(ds, "auto") == groups


def test_split_keeps_groups_whole_and_stratifies(sib_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "splits"
    run_split(sib_data, out, val=0.2, test=0.2, seed=1)
    frames = _read(out)
    assert set(frames) == {"train", "val", "test"}
    every = pd.concat(frames.values())
    ds = scan(sib_data)
    assert sorted(every.path) == sorted(str(r.path) for r in ds.records)  # each once
    assert all(Path(p).is_absolute() and Path(p).exists() for p in every.path)
    split_of = {s: set(f.group) for s, f in frames.items()}
    assert not split_of["train"] & split_of["val"]
    assert not split_of["train"] & split_of["test"]
    assert not split_of["val"] & split_of["test"]
    for s in ("val", "test"):
        assert set(frames[s].label) == set(ds.classes)  # every class present
    classes = json.loads((out / "classes.json").read_text())
    assert classes == sorted(classes)
    assert all(every.label_id == [classes.index(x) for x in every.label])
    summary = json.loads((out / "split.json").read_text())
    assert summary["params"]["seed"] == 1


def test_same_seed_same_files_and_force(sib_data: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    run_split(sib_data, a, val=0.25, seed=7)
    run_split(sib_data, b, val=0.25, seed=7)
    for f in ("train.csv", "val.csv", "classes.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    with pytest.raises(LeukoError, match="use force=True to overwrite"):
        run_split(sib_data, a, val=0.25, seed=7)
    run_split(sib_data, a, val=0.25, seed=8, force=True)
    assert json.loads((a / "split.json").read_text())["params"]["seed"] == 8


def test_none_splits_files_at_target_fraction() -> None:
    labels = ["A"] * 50 + ["B"] * 30
    groups = [f"f{i}" for i in range(80)]
    res = split_dataset(labels, groups, val=0.2, seed=0)
    val = res.splits["val"]
    assert sum(labels[i] == "A" for i in val) == 10
    assert sum(labels[i] == "B" for i in val) == 6
    assert sorted(res.splits["train"] + val) == list(range(80))


def test_groups_never_straddle_and_mixed_label_group_stays_whole() -> None:
    labels = ["A"] * 40 + ["B"] * 40
    groups = [f"g{i // 4}" for i in range(80)]
    groups[0] = groups[41] = "shared"  # a copy filed under both classes
    res = split_dataset(labels, groups, val=0.25, test=0.25, seed=3)
    where = {}
    for s, idx in res.splits.items():
        for i in idx:
            assert where.setdefault(groups[i], s) == s
    assert sum(len(v) for v in res.splits.values()) == 80


def test_too_few_groups_warns() -> None:
    res = split_dataset(["A"] * 6 + ["B"] * 6, ["a"] * 6 + [f"b{i}" for i in range(6)], val=0.3)
    assert any("class A" in w for w in res.warnings)
    assert not any("class B" in w for w in res.warnings)


def _flat(tmp_path: Path) -> Path:
    make_dataset(tmp_path / "d", per_class=4, seed=1, plant=False)
    return tmp_path / "d"


def test_pattern_column_none_and_bad_specs(tmp_path: Path) -> None:
    data = _flat(tmp_path)
    ds = scan(data)
    none = resolve_groups(ds, "none")
    assert len(set(none)) == len(ds.records)
    pat = resolve_groups(ds, r"pattern:^_(\d+)_")
    assert all(g.split("/")[0] == r.label for g, r in zip(pat, ds.records, strict=True))
    manifest = tmp_path / "m.csv"
    pd.DataFrame(
        {
            "path": [str(r.path) for r in ds.records],
            "label": [r.label for r in ds.records],
            "patient": [f"p{i % 3}" for i in range(len(ds.records))],
        }
    ).to_csv(manifest, index=False)
    mds = scan(manifest)
    col = resolve_groups(mds, "column:patient")
    assert len(set(col)) == 3
    for bad, message in (
        ("bogus", "^group_by must be auto, none"),
        ("column:nope", "no manifest column 'nope'"),
        ("pattern:([", "invalid regular expression"),
        ("pattern:zzz_never", "matched none of the"),
    ):
        with pytest.raises(LeukoError, match=message):
            resolve_groups(mds, bad)


def test_exclude_drops_quarantined_and_conflicts(tmp_path: Path) -> None:
    data = _flat(tmp_path)
    ds = scan(data)
    rels = sorted(r.rel for r in ds.records)
    report = tmp_path / "report.json"
    report.write_text(
        json.dumps(
            {
                "groups": [
                    {
                        "kind": "exact",
                        "files": rels[:3],
                        "labels": [],
                        "conflict": False,
                        "keep": rels[0],
                    },
                    {
                        "kind": "near",
                        "files": rels[3:5],
                        "labels": [],
                        "conflict": True,
                        "keep": None,
                    },
                ]
            }
        )
    )
    out = tmp_path / "s"
    run_split(data, out, val=0.25, group_by="none", exclude=report)
    every = pd.concat(_read(out).values())
    kept = set(every.rel)
    assert rels[0] in kept
    assert not kept & {rels[1], rels[2], rels[3], rels[4]}
    assert len(every) == len(rels) - 4
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LeukoError, match="^exclude .* is not readable dedupe report"):
        run_split(data, tmp_path / "s2", exclude=bad)


def test_cli_writes_refuses_to_overwrite_and_checks_fractions(tmp_path: Path) -> None:
    data = _flat(tmp_path)
    out = tmp_path / "cli"
    args = ("split", str(data), "--out", str(out), "--group-by", "none", "--seed", "0")
    first = invoke(*args)
    assert first.code == 0, first.stderr
    assert (out / "train.csv").exists() and (out / "val.csv").exists()
    assert "val share" in first.stdout
    invoke(*args).one_line_error(2, "--force")
    invoke("split", str(data), "--out", str(tmp_path / "x"), "--val", "1.5").one_line_error(
        2, "--val and --test must be in [0, 1)"
    )
    assert not (tmp_path / "x").exists()
