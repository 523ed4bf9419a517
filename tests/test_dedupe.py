"""leuko dedupe: every planted copy and conflict is found, nothing else is grouped, and
--apply / --undo never lose a byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Run, invoke, tree_digest
from PIL import Image

from leukocli._util.bits import popcount
from leukocli.curation.candidates import iter_candidates, unique_rows
from leukocli.curation.dedupe import find_duplicates
from leukocli.curation.quarantine import apply_quarantine, undo_quarantine
from leukocli.data.synth import make_dataset
from leukocli.errors import LeukoError


def _leuko(*args: str) -> Run:
    return invoke("dedupe", *args)


_tree = tree_digest


@pytest.fixture(scope="module")
def planted_src(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Six smears per class, two augmented siblings each, plus synth's planted cases."""
    out = tmp_path_factory.mktemp("synth") / "data"
    info = make_dataset(out, per_class=6, siblings=2, seed=3, plant=True)
    # keep the ground-truth files out of the scanned tree
    for name in ("sources.csv", "planted.json"):
        (out / name).rename(out.parent / name)
    return out, info["planted"]


@pytest.fixture()
def planted(planted_src: tuple[Path, dict[str, Any]], tmp_path: Path) -> tuple[Path, dict]:
    src, plan = planted_src
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    return dst, plan


def _groups(findings: Any) -> dict[frozenset[str], Any]:
    return {frozenset(g.files): g for g in findings.groups}


def test_finds_every_planted_case_and_nothing_else(planted_src: tuple[Path, dict]) -> None:
    root, plan = planted_src
    f = find_duplicates(root)
    groups = _groups(f)
    expected_exact = [frozenset(p) for p in plan["exact"]]
    expected_near = [frozenset((p["original"], p["copy"])) for p in plan["near"]]
    expected_conflict = [frozenset(p) for p in plan["conflict"]]
    # counts are exact: the augmented siblings and distinct smears form no group
    assert set(groups) == set(expected_exact + expected_near + expected_conflict)
    for key in expected_exact:
        assert groups[key].match == "exact" and not groups[key].conflict
        assert groups[key].keep in key
    for key, p in zip(expected_near, plan["near"], strict=True):
        g = groups[key]
        assert g.match == "near" and not g.conflict, p["transform"]
        if p["transform"] in ("hflip", "rot90"):
            assert g.transforms and "identity" not in g.transforms, g.transforms
        if p["transform"] == "resize":
            assert g.keep == p["original"]  # the larger picture stays
    for key in expected_conflict:
        g = groups[key]
        assert g.conflict and g.keep is None and len(g.labels) == 2
    assert set(f.unreadable) == set(plan["corrupt"])
    assert all(f.unreadable[r] for r in plan["corrupt"])
    collisions = {frozenset(c["files"]) for c in f.name_collisions}
    assert collisions == {frozenset(p) for p in plan["name_collisions"]}
    s = f.summary()
    assert s["exact_groups"] == len(expected_exact) + len(expected_conflict)
    assert s["near_groups"] == len(expected_near)
    assert s["conflict_groups"] == 1
    # one file per ordinary group, both files of the conflict
    assert s["to_quarantine"] == len(expected_exact) + len(expected_near) + 2


def test_no_transforms_misses_only_flipped_and_turned(planted_src: tuple[Path, dict]) -> None:
    root, plan = planted_src
    groups = _groups(find_duplicates(root, transforms=False))
    for p in plan["near"]:
        found = frozenset((p["original"], p["copy"])) in groups
        assert found == (p["transform"] not in ("hflip", "rot90")), p["transform"]


def test_same_pixels_different_format_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for label in ("A", "B"):
        (tmp_path / label).mkdir()
        for i in range(3):
            arr = rng.integers(0, 255, size=(40, 60, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / label / f"{label}{i}.png")
    Image.open(tmp_path / "A" / "A0.png").save(tmp_path / "A" / "A0_copy.bmp")
    f = find_duplicates(tmp_path)
    assert [(g.match, g.files) for g in f.groups] == [("exact", ["A/A0.png", "A/A0_copy.bmp"])]


def test_candidate_index_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 2**63, size=300, dtype=np.uint64)
    # clustered hashes: flip a few bits of a few seeds, as similar images do
    noise = np.zeros(300, dtype=np.uint64)
    for b in range(6):
        noise |= (rng.random(300) < 0.5).astype(np.uint64) << np.uint64(b * 7)
    hashes = np.stack([base[rng.integers(0, 20, 300)] ^ noise, base ^ noise], axis=1)
    inverse = (0, 3, 2, 1, 4, 5, 6, 7)
    for t in (0, 3, 10):
        rows = unique_rows(np.concatenate(list(iter_candidates(hashes, t))))
        got = {tuple(r) for r in rows[:, :3].tolist()}
        want = set()
        for k in range(hashes.shape[1]):
            d = popcount(hashes[:, k][:, None] ^ hashes[:, 0][None, :])
            for i, j in zip(*np.nonzero(d <= t), strict=True):
                if i != j:
                    want.add((int(i), int(j), k) if i < j else (int(j), int(i), inverse[k]))
        assert got == want, t


def test_cli_report_schema(planted: tuple[Path, dict], tmp_path: Path) -> None:
    root, plan = planted
    before = _tree(root)
    report = tmp_path / "out" / "dd.json"
    proc = _leuko(str(root), "--report", str(report), "--top", "3")
    assert proc.code == 0, proc.stderr
    assert "name collisions" in proc.stdout and "Largest groups" in proc.stdout
    r = json.loads(report.read_text())
    assert isinstance(r["scanned"], int) and r["scanned"] == len(before)
    assert r["unreadable"] == plan["corrupt"]
    assert set(r["unreadable_reasons"]) == set(plan["corrupt"])
    for g in r["groups"]:
        assert g["kind"] in ("exact", "near")
        assert set(g) >= {"kind", "files", "labels", "conflict", "keep"}
        assert all(f in before for f in g["files"])  # relative to DATA
        assert (g["keep"] is None) == g["conflict"]
    assert {frozenset(c["files"]) for c in r["name_collisions"]} == {
        frozenset(p) for p in plan["name_collisions"]
    }
    assert all(set(c) >= {"name", "files"} for c in r["name_collisions"])
    assert r["parameters"]["threshold"] == 10 and r["summary"]["scanned"] == r["scanned"]
    assert _tree(root) == before  # a dry run changes nothing


def test_apply_then_undo_is_byte_identical(planted: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = planted
    before = _tree(root)
    proc = _leuko(str(root), "--apply", "--report", str(tmp_path / "r.json"))
    assert proc.code == 0, proc.stderr
    moved = json.loads((tmp_path / "r.json").read_text())["to_quarantine"]
    qdir = root.parent / "data-quarantine"
    after = _tree(root)
    assert set(after) == set(before) - set(moved)
    quarantined = {k: v for k, v in _tree(qdir).items() if not k.startswith("dedupe-manifest")}
    assert quarantined == {rel: before[rel] for rel in moved}  # same relative paths
    manifests = sorted(qdir.glob("dedupe-manifest-*.jsonl"))
    assert len(manifests) == 1 and str(manifests[0]) in proc.stdout and "--undo" in proc.stdout

    again = _leuko(str(root), "--apply")  # twice is safe: nothing left to move
    assert again.code == 0, again.stderr
    assert "nothing to quarantine" in again.stdout
    assert _tree(root) == after

    proc = _leuko("--undo", str(manifests[0]))
    assert proc.code == 0, proc.stderr
    assert _tree(root) == before
    proc = _leuko("--undo", str(manifests[0]))  # undo twice is harmless too
    assert proc.code == 0, proc.stderr
    assert _tree(root) == before


def test_interrupted_apply_can_be_undone(planted: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = planted
    before = _tree(root)
    f = find_duplicates(root)
    todo = f.to_quarantine
    qdir = tmp_path / "q"
    summary = apply_quarantine(f, qdir)
    manifest = summary.manifest
    assert manifest is not None and summary.moved == len(todo)
    # Pretend the run was killed: no closing count, the last file was planned and moved but
    # never logged 'moved', the one before was planned but never moved, and the tail line
    # is half written.
    lines = manifest.read_text().splitlines()
    assert json.loads(lines[-1]) == {"closed": len(todo)}
    lines = lines[:-1]
    last = json.loads(lines[-1])
    assert last["status"] == "moved"
    prev_planned = json.loads(lines[-4])
    assert prev_planned["status"] == "planned" and json.loads(lines[-3])["status"] == "moved"
    shutil.move(prev_planned["destination"], prev_planned["source"])
    kept = lines[:-3] + [lines[-2], '{"source": "cut sho']
    manifest.write_text("\n".join(kept) + "\n")
    s = undo_quarantine(manifest)
    assert s.failed == []
    assert s.skipped == 1 and s.moved == len(todo) - 1
    assert _tree(root) == before


def test_apply_never_overwrites_in_quarantine(planted: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = planted
    before = _tree(root)
    f = find_duplicates(root)
    qdir = tmp_path / "q"
    occupied = qdir / f.to_quarantine[0]
    occupied.parent.mkdir(parents=True)
    occupied.write_bytes(b"already here")
    summary = apply_quarantine(f, qdir)
    assert occupied.read_bytes() == b"already here"
    assert occupied.with_name(f"{occupied.stem}~1{occupied.suffix}").is_file()
    assert summary.manifest is not None and undo_quarantine(summary.manifest).failed == []
    assert _tree(root) == before and occupied.read_bytes() == b"already here"


def test_undo_never_overwrites_a_different_file(planted: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = planted
    summary = apply_quarantine(find_duplicates(root), tmp_path / "q")
    assert summary.manifest is not None
    entry = json.loads(summary.manifest.read_text().splitlines()[-2])  # the last move
    Path(entry["source"]).write_bytes(b"something new")
    proc = _leuko("--undo", str(summary.manifest))
    assert proc.code == 1
    assert "not overwritten" in proc.stderr and "Traceback" not in proc.stderr
    assert Path(entry["source"]).read_bytes() == b"something new"
    assert Path(entry["destination"]).exists()


def test_refusals_are_one_line_errors(planted: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = planted
    before = _tree(root)
    cases = [
        ((str(root), "--apply", "--quarantine", str(root / "q")), "outside the scanned tree"),
        ((str(root), "--threshold", "99"), "--threshold must be between 0 and 32"),
        ((), "give a dataset folder"),
        ((str(root), "--quarantine", str(tmp_path / "q")), "only makes sense with --apply"),
        (("--undo", str(tmp_path / "none.jsonl")), "no such manifest"),
    ]
    for args, fragment in cases:
        _leuko(*args).one_line_error(2, fragment)
    csv = tmp_path / "m.csv"
    csv.write_text("path,label\n" + "".join(
        f"{root / rel},{rel.split('/')[0]}\n" for rel in sorted(before) if "_" in rel
    ))
    found = find_duplicates(csv)  # a CSV manifest is scanned too; paths relative to its folder
    assert found.groups and all(f.startswith("data/") for g in found.groups for f in g.files)
    with pytest.raises(LeukoError, match="^apply moves files"):
        apply_quarantine(found)
    assert _tree(root) == before
