"""The synthetic dataset is the demo data and every later command's test fixture, so
what it promises (same seed, same bytes; planted cases where planted.json says;
ground truth that covers every image) is what these tests hold it to."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from conftest import invoke
from PIL import Image, ImageOps

from leukocli.data.dataset import scan
from leukocli.data.images import check_image
from leukocli.data.render import CLASSES, NEAR_TRANSFORMS
from leukocli.data.synth import make_dataset

NAME = re.compile(r"_\d+_\d{4,}\.jpeg")


def _tree(root: Path) -> dict[str, bytes]:
    return {f.relative_to(root).as_posix(): f.read_bytes() for f in root.rglob("*") if f.is_file()}


def _sources(root: Path) -> dict[str, str]:
    with open(root / "sources.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and list(rows[0]) == ["file", "source"]
    return {r["file"]: r["source"] for r in rows}


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32)


# --------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = dict(per_class=3, size=(48, 64), siblings=2, plant=True)
    first = make_dataset(tmp_path / "a", seed=5, **kwargs)
    second = make_dataset(tmp_path / "b", seed=5, **kwargs)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert sorted(a) == sorted(b)
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    assert first["planted"] == second["planted"]

    make_dataset(tmp_path / "c", seed=6, **kwargs)
    c = _tree(tmp_path / "c")
    assert any(a[k] != c.get(k) for k in a if k.endswith(".jpeg"))  # another seed, other data


def test_layout_sizes_and_counts(synth_dir: Path) -> None:
    assert sorted(p.name for p in synth_dir.iterdir() if p.is_dir()) == list(CLASSES)
    ds = scan(synth_dir)
    assert ds.classes == list(CLASSES)
    planted = json.loads((synth_dir / "planted.json").read_text())
    resized = {n["copy"] for n in planted["near"] if n["transform"] in ("resize", "rot90")}
    for r in ds.records:
        assert NAME.fullmatch(r.path.name), r.rel
        with Image.open(r.path) as im:
            assert im.format == "JPEG"
            if r.rel not in resized:
                assert im.size == (160, 120), r.rel
    # 6 smears x 2 siblings per class, plus the planted copies
    assert all(n >= 12 for n in ds.counts().values())


# --------------------------------------------------------------------------- planted cases
def test_planted_exact_copies(synth_dir: Path, synth_planted: dict[str, Any]) -> None:
    assert len(synth_planted["exact"]) == 2
    for orig, copy in synth_planted["exact"]:
        assert orig != copy
        assert orig.split("/")[0] == copy.split("/")[0]  # same class
        assert (synth_dir / orig).read_bytes() == (synth_dir / copy).read_bytes()


def test_planted_near_copies_look_the_same_but_differ_in_bytes(
    synth_dir: Path, synth_planted: dict[str, Any]
) -> None:
    near = synth_planted["near"]
    assert sorted(n["transform"] for n in near) == sorted(NEAR_TRANSFORMS)
    sources = _sources(synth_dir)
    assert len({sources[n["original"]] for n in near}) == len(near)  # distinct smears
    for n in near:
        orig, copy = synth_dir / n["original"], synth_dir / n["copy"]
        assert orig.parent == copy.parent and orig != copy
        assert orig.read_bytes() != copy.read_bytes()
        a = Image.open(orig).convert("RGB")
        b = Image.open(copy).convert("RGB")
        # undo the geometric part, then the pictures must nearly match
        if n["transform"] == "hflip":
            b = ImageOps.mirror(b)
        elif n["transform"] == "rot90":
            b = b.transpose(Image.Transpose.ROTATE_270)
        elif n["transform"] == "resize":
            assert b.size == (round(a.width * 0.75), round(a.height * 0.75))
            a = a.resize(b.size, Image.Resampling.BILINEAR)
        assert a.size == b.size
        diff = np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean()
        assert diff < 12, (n, diff)


def test_planted_label_conflict(synth_dir: Path, synth_planted: dict[str, Any]) -> None:
    [[orig, copy]] = synth_planted["conflict"]
    assert orig.split("/")[0] != copy.split("/")[0]
    assert (synth_dir / orig).read_bytes() == (synth_dir / copy).read_bytes()


def test_planted_name_collisions(synth_dir: Path, synth_planted: dict[str, Any]) -> None:
    pairs = synth_planted["name_collisions"]
    assert len(pairs) == 2
    for a, b in pairs:
        assert Path(a).name == Path(b).name
        assert Path(a).parent != Path(b).parent
        assert (synth_dir / a).read_bytes() != (synth_dir / b).read_bytes()
    # and no other name occurs in two class folders
    names = Counter(f.name for f in synth_dir.glob("*/*.jpeg"))
    assert {n for n, k in names.items() if k > 1} == {Path(a).name for a, _ in pairs}


def test_planted_corrupt_file(synth_dir: Path, synth_planted: dict[str, Any]) -> None:
    [bad] = synth_planted["corrupt"]
    assert bad.endswith(".jpeg") and (synth_dir / bad).is_file()
    assert check_image(synth_dir / bad) is not None
    assert [p.rel for p in scan(synth_dir).problems] == [bad]


def test_no_plant_means_nothing_planted(tiny_dataset: Any) -> None:
    root = tiny_dataset(per_class=2, plant=False)
    planted = json.loads((root / "planted.json").read_text())
    assert all(v == [] for v in planted.values())
    ds = scan(root)
    assert ds.problems == [] and len(ds) == 8
    hashes = Counter(r.path.read_bytes() for r in ds.records)
    assert max(hashes.values()) == 1


# --------------------------------------------------------------------------- ground truth
def test_sources_cover_every_readable_image(synth_dir: Path, synth_planted: dict[str, Any]) -> None:
    sources = _sources(synth_dir)
    readable = {r.rel for r in scan(synth_dir).records}
    assert set(sources) == readable
    assert all(re.fullmatch(r"smear_\d{4}", s) for s in sources.values())
    # planted copies carry their original's source
    pairs = [*synth_planted["exact"], *synth_planted["conflict"]]
    pairs += [(n["original"], n["copy"]) for n in synth_planted["near"]]
    for orig, copy in pairs:
        assert sources[copy] == sources[orig]


def test_siblings_are_distinct_views_of_one_smear(synth_dir: Path) -> None:
    sources = _sources(synth_dir)
    by_source: dict[str, list[str]] = defaultdict(list)
    for file, source in sources.items():
        by_source[source].append(file)
    assert len(by_source) == 6 * len(CLASSES)
    for source, files in by_source.items():
        assert len(files) >= 2, source
        assert len({f.split("/")[0] for f in files}) <= 2  # a conflict copy may add one class
        views = [(synth_dir / f).read_bytes() for f in files]
        assert len(set(views)) >= 2  # at least the two siblings differ
        sizes = {Image.open(synth_dir / f).size for f in files}
        assert (160, 120) in sizes  # views keep the smear's frame


def test_sibling_file_names_do_not_reveal_the_source(tiny_dataset: Any) -> None:
    root = tiny_dataset(per_class=3, siblings=4, plant=False)
    sources = _sources(root)
    assert len(sources) == 3 * 4 * len(CLASSES)
    for file in sources:
        assert NAME.fullmatch(Path(file).name)
    # the number in the name is random: files of one smear are not adjacent when sorted
    ordered = sorted(sources)
    same_neighbour = sum(sources[x] == sources[y] for x, y in pairwise(ordered))
    assert same_neighbour < len(ordered) // 2


# --------------------------------------------------------------------------- class cues
def test_classes_differ_in_colour_on_unseen_smears(tiny_dataset: Any) -> None:
    """The cues a CNN learns must be there: even a colour histogram separates the
    classes on smears it has not seen (chance is 25%)."""
    from sklearn.linear_model import LogisticRegression

    root = tiny_dataset(per_class=14, size=(60, 80), seed=3)
    features, labels, held_out = [], [], []
    for file, source in _sources(root).items():
        q = _pixels(root / file).astype(np.int64) // 64
        hist = np.bincount((q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).ravel(), minlength=64)
        features.append(np.sqrt(hist / hist.sum()))
        labels.append(file.split("/")[0])
        held_out.append(int(source[-4:]) % 14 >= 9)
    x, y, test = np.array(features), np.array(labels), np.array(held_out)
    model = LogisticRegression(max_iter=2000).fit(x[~test], y[~test])
    assert (model.predict(x[test]) == y[test]).mean() >= 0.75


def test_rendered_smears_are_mostly_pink_background(tiny_dataset: Any) -> None:
    root = tiny_dataset(per_class=1, size=(120, 160), plant=False)
    for f in root.glob("*/*.jpeg"):
        px = _pixels(f)
        r, g, b = px[..., 0].mean(), px[..., 1].mean(), px[..., 2].mean()
        assert r > g and r > b, f  # eosin-stained field, not blue or grey
        assert 150 < px.mean() < 240, f


# --------------------------------------------------------------------------- CLI entry
def _synth(out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return invoke("synth", str(out), "--per-class", "3", "--size", "48x64", "--seed", "1",
                  *extra)


def test_synth_command_validates_and_writes(tmp_path: Path) -> None:
    out = tmp_path / "s"
    first = _synth(out)
    assert first.code == 0, first.stderr
    assert "EOSINOPHIL" in first.stdout and "planted" in first.stdout.lower()
    assert (out / "planted.json").is_file() and (out / "sources.csv").is_file()

    _synth(out).one_line_error(2, "--force")
    before = _tree(out)
    again = _synth(out, "--force")
    assert again.code == 0, again.stderr
    assert _tree(out) == before  # same seed into the same folder: nothing changes
    assert "sources.csv and planted.json are rewritten" in again.stderr  # says what it does

    # an image of the user's under a name synth wants is never replaced
    mine = next(out.glob("MONOCYTE/*.jpeg"))
    mine.write_bytes(b"the user's own picture")
    _synth(out, "--force").one_line_error(2, "already holds 1 different file")
    assert mine.read_bytes() == b"the user's own picture"

    for bad, message in (
        (("--size", "48x"), "HEIGHTxWIDTH"),
        (("--size", "8x8"), "below the minimum"),
        (("--per-class", "0"), "--per-class must be at least 1"),
        (("--siblings", "0"), "--siblings must be at least 1"),
        (("--per-class", "2"), "planting needs --per-class 3"),
    ):
        _synth(tmp_path / "new", *bad).one_line_error(2, message)
        assert not (tmp_path / "new").exists()


def test_synth_command_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    _synth(target, "--force").one_line_error(2, "not a folder")


def test_jpegs_carry_no_metadata(synth_dir: Path) -> None:
    """Determinism across machines: no EXIF, timestamps or comments in the files."""
    f = next(synth_dir.glob("EOSINOPHIL/*.jpeg"))
    with Image.open(io.BytesIO(f.read_bytes())) as im:
        assert not im.getexif()
        assert "comment" not in im.info and "exif" not in im.info
