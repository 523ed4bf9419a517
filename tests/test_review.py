"""`leuko review` and what its corrections feed: the page's content, `count
--corrections` and `--relabel`, and the refusals of files that are not leuko's."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import invoke

from leukocli.data.corrections import HEADER
from leukocli.data.synth import make_fields


def page_data(page: Path) -> dict:
    """The JSON the page's script renders (what a person sees)."""
    text = page.read_text()
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S)
    assert found, "no data block"
    return json.loads(found.group(1))


def write_corrections(path: Path, rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory, tiny_run: tuple[Path, Path]
            ) -> tuple[Path, Path, Path]:
    """Eight synthetic fields counted with the tiny model: (root, photos, count folder)."""
    root = tmp_path_factory.mktemp("review")
    make_fields(root / "fields", n=8, seed=4)
    done = invoke("count", str(root / "fields" / "JPEGImages"), "--model", str(tiny_run[1]),
                  "--out", str(root / "count"), "--eval")
    assert done.code == 0, done.stderr
    return root, root / "fields" / "JPEGImages", root / "count"


def cells_of(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((folder / "cells.csv").open()))


def test_the_page_shows_every_counted_cell_in_its_class_least_confident_first(
        counted: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, _, count = counted
    shutil.copytree(count, tmp_path / "count")
    done = invoke("review", str(tmp_path / "count"), "--format", "json")
    assert done.code == 0, done.stderr
    said = json.loads(done.stdout)
    page = Path(said["page"])
    assert page == tmp_path / "count" / "review.html"
    data = page_data(page)
    cells = cells_of(count)
    assert said["cells"] == len(data["cells"]) == len(cells) > 0
    assert data["header"] == list(HEADER)
    assert {c["proposed"] for c in data["cells"]} <= set(data["classes"])
    probs = [c["p"] for c in data["cells"]]
    assert probs == sorted(probs)
    # every thumbnail embedded: the page needs nothing but itself
    assert all(c["src"].startswith("data:image/jpeg;base64,") for c in data["cells"])
    html = page.read_text()
    assert not re.search(r'(src|href)="https?:', html)
    # each cell keeps its photo and box, so a correction finds it again
    boxes = {(Path(r["photo"]).name, tuple(float(r[k]) for k in HEADER[1:5])) for r in cells}
    assert {(Path(c["photo"]).name, tuple(c["box"])) for c in data["cells"]} == boxes


def test_panels_follow_the_lab_order() -> None:
    from leukocli.review.items import lab_order

    assert lab_order(["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]) == [
        "NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE", "EOSINOPHIL"]
    assert lab_order(["basophil", "ZZ", "neutrophil", "IG"]) == ["neutrophil", "basophil",
                                                                 "IG", "ZZ"]


def test_count_with_corrections_takes_the_persons_classes(
        counted: tuple[Path, Path, Path], tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, photos, count = counted
    cells = cells_of(count)
    assert len(cells) >= 3
    classes = json.loads((count / "counts.json").read_text())["classes"]
    a, b, c = cells[0], cells[1], cells[2]
    other = next(k for k in classes if k != a["class"])
    fix = write_corrections(tmp_path / "corrections.csv", [
        [a["photo"], *(a[k] for k in HEADER[1:5]), a["class"], other, "2026-12-03T10:00:00Z"],
        [b["photo"], *(b[k] for k in HEADER[1:5]), b["class"], "NOT_WBC", "t"],
        [c["photo"], *(c[k] for k in HEADER[1:5]), c["class"], "unclassifiable", "t"],
    ])
    done = invoke("count", str(photos), "--model", str(tiny_run[1]), "--out",
                  str(tmp_path / "c2"), "--corrections", str(fix), "--format", "json", "--eval")
    assert done.code == 0, done.stderr
    result = json.loads(done.stdout)
    scored = json.loads((count / "counts.json").read_text())["evaluation"]
    assert scored["precision"] == 1.0  # every located cell is a white cell here
    # the cell the person called no white cell is no longer the count's detection
    assert result["evaluation"]["true_positives"] == scored["true_positives"] - 1
    assert result["evaluation"]["missed"] == scored["missed"] + 1
    after = cells_of(tmp_path / "c2")
    assert [r["class"] for r in after][:3] == [other, "NOT_WBC", "UNCLASSIFIABLE"]
    assert [r["predicted"] for r in after][:3] == [a["class"], b["class"], c["class"]]
    assert all(r["class"] == r["predicted"] and not r["corrected_at"] for r in after[3:])
    assert [r["class"] for r in after[3:]] == [r["class"] for r in cells[3:]]
    total = result["total"]
    assert total["cells"] == len(cells) - 1  # no white cell: out of the differential
    assert result["classes"] == [*classes, "UNCLASSIFIABLE"]
    for k in result["classes"]:
        assert total["count"][k] == sum(1 for r in after if r["class"] == k)
    assert result["corrections"] == {"file": str(fix), "changed": 1, "not_white_cells": 1,
                                     "unclassifiable": 1}
    # reviewing the corrected count shows the person's classes, and saves them again
    data = page_data(Path(json.loads(invoke("review", str(tmp_path / "c2"), "--format",
                                            "json").stdout)["page"]))
    current = {(Path(x["photo"]).name, tuple(x["box"])): x["current"] for x in data["cells"]}
    key = (Path(a["photo"]).name, tuple(float(a[k]) for k in HEADER[1:5]))
    assert current[key] == other


@pytest.mark.parametrize("content, fragment", [
    ("path,label\na.jpg,X\n", "is not a leuko corrections file"),
    (",".join(HEADER) + "\nfield.jpg,1,1,5,5,A,MEGAKARYOCYTE,t\n", "is not one of"),
    (",".join(HEADER) + "\nfield.jpg,1,1,x,5,A,NOT_WBC,t\n", "not four numbers"),
    (",".join(HEADER) + "\nfield.jpg,9,1,5,5,A,NOT_WBC,t\n", "impossible box"),
    (",".join(HEADER) + "\nfield.jpg,1,1,5\n", "fields, not 8"),
])
def test_corrections_that_are_not_leukos_are_refused_in_one_line(
        counted: tuple[Path, Path, Path], tiny_run: tuple[Path, Path], tmp_path: Path,
        content: str, fragment: str) -> None:
    _, photos, _ = counted
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    done = invoke("count", str(photos), "--model", str(tiny_run[1]), "--out",
                  str(tmp_path / "c"), "--corrections", str(bad))
    done.one_line_error(2, fragment)
    assert not (tmp_path / "c").exists()  # refused before any photo was counted


def test_a_correction_of_a_cell_the_count_did_not_find_is_refused(
        counted: tuple[Path, Path, Path], tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, photos, count = counted
    cell = cells_of(count)[0]
    fix = write_corrections(tmp_path / "c.csv", [[cell["photo"], 1, 1, 3, 3, "A", "NOT_WBC",
                                                  "t"]])
    done = invoke("count", str(photos), "--model", str(tiny_run[1]), "--out",
                  str(tmp_path / "c"), "--corrections", str(fix))
    done.one_line_error(2, "did not find")
    no_box = write_corrections(tmp_path / "n.csv", [[cell["photo"], "", "", "", "",
                                                     cell["class"], "NOT_WBC", "t"]])
    done = invoke("count", str(photos), "--model", str(tiny_run[1]), "--out",
                  str(tmp_path / "c"), "--corrections", str(no_box))
    done.one_line_error(2, "--relabel")


def test_review_keeps_a_users_file_and_refuses_what_is_not_leukos(
        counted: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, _, count = counted
    folder = tmp_path / "count"
    shutil.copytree(count, folder)
    mine = folder / "review.html"
    mine.write_text("<html>my notes</html>")
    done = invoke("review", str(folder))
    assert done.code == 0, done.stderr
    assert mine.read_text() == "<html>my notes</html>"
    assert (folder / "review~1.html").is_file()
    assert invoke("review", str(folder)).code == 0  # its own page is replaced, not multiplied
    assert sorted(p.name for p in folder.glob("review*.html")) == ["review.html",
                                                                   "review~1.html"]
    invoke("review", str(tmp_path / "nothing")).one_line_error(2, "no such file")
    (tmp_path / "empty").mkdir()
    invoke("review", str(tmp_path / "empty")).one_line_error(2, "neither cells.csv")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    invoke("review", str(tmp_path / "x.csv")).one_line_error(2, "is not leuko predictions")
    invoke("review", str(folder), "--uncertain", "0").one_line_error(2, "--uncertain")


def test_paths_in_a_strangers_count_are_only_opened_as_images(tmp_path: Path) -> None:
    """A count folder from elsewhere may name any file: only images are read for thumbnails,
    and a page needs at least one photo that is there."""
    folder = tmp_path / "count"
    folder.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    rows = [",".join(["photo", "x_min", "y_min", "x_max", "y_max", "class", "probability"]),
            f"{secret},1,1,20,20,A,0.5"]
    (folder / "cells.csv").write_text("\n".join(rows) + "\n")
    invoke("review", str(folder)).one_line_error(2, "can be read")
    # names are data, never markup or script
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 180, 190)).save(tmp_path / "x.jpg")
    evil = "A</script><script>alert(1)</script>"
    (folder / "cells.csv").write_text(rows[0] + f"\n{tmp_path / 'x.jpg'},1,1,20,20,{evil},0.5\n")
    assert invoke("review", str(folder)).code == 0
    html = (folder / "review.html").read_text()
    assert "<script>alert(1)" not in html
    assert page_data(folder / "review.html")["classes"] == [evil]
    (folder / "cells.csv").write_text(rows[0] + f'\n{tmp_path / "x.jpg"},1,1,20,20,"A\nB",0.5\n')
    invoke("review", str(folder)).one_line_error(2, "not a class name")


def test_predictions_and_audits_are_reviewed_as_single_cell_images(
        tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = tiny_run
    done = invoke("predict", str(data), "--model", str(run), "--format", "csv", "--top-k", "2")
    assert done.code == 0, done.stderr
    preds = tmp_path / "preds.csv"
    preds.write_text(done.stdout)
    n = len(pd.read_csv(preds))
    page = json.loads(invoke("review", str(preds), "--format", "json").stdout)
    assert page["kind"] == "predictions" and page["cells"] == n
    cells = page_data(Path(page["page"]))["cells"]
    assert all(c["box"] is None and c["second"] and c["p2"] is not None for c in cells)

    from leukocli.evaluation.audit import audit
    from leukocli.training.audit_run import write_audit

    table = pd.read_csv(preds)
    classes = [c[len("prob_"):] for c in table.columns if c.startswith("prob_")]
    rng = np.random.default_rng(0)
    oof = pd.DataFrame({"path": table["path"], "group": range(n),
                        "label": rng.choice(classes, n)})
    for c in classes:
        oof[f"prob_{c}"] = table[f"prob_{c}"]
    result = audit(oof, classes)
    write_audit(result, tmp_path / "audit", top=4)
    page = json.loads(invoke("review", str(tmp_path / "audit"), "--format", "json").stdout)
    assert page["kind"] == "audit"
    assert page["cells"] == int(result.images["suspect"].sum()) > 0
    shown = page_data(Path(page["page"]))["cells"]
    assert all(c["proposed"] == oof.set_index("path").loc[c["photo"], "label"] for c in shown)


def test_relabels_change_training_labels_and_nothing_else(
        tiny_dataset, tmp_path: Path) -> None:
    data = tiny_dataset(per_class=4, size=(64, 64), siblings=1)
    images = sorted(data.rglob("*.jpeg"))
    before = hashlib.sha256(b"".join(p.read_bytes() for p in images)).hexdigest()
    classes = sorted({p.parent.name for p in images})
    a, b = images[0], images[-1]
    to = next(c for c in classes if c != a.parent.name)
    fix = write_corrections(tmp_path / "relabel.csv", [
        [str(a), "", "", "", "", a.parent.name, to.lower(), "t"],
        [b.relative_to(data).as_posix(), "", "", "", "", b.parent.name, "NOT_WBC", "t"],
    ])
    done = invoke("split", str(data), "--out", str(tmp_path / "s"), "--group-by", "none",
                  "--relabel", str(fix))
    assert done.code == 0, done.stderr
    rows = pd.concat([pd.read_csv(tmp_path / "s" / f) for f in ("train.csv", "val.csv")])
    label = dict(zip(rows["path"].map(lambda p: str(Path(p).resolve())), rows["label"],
                     strict=True))
    assert label[str(a.resolve())] == to
    assert str(b.resolve()) not in label
    assert len(label) == len(images) - 1
    for p in images[1:-1]:
        assert label[str(p.resolve())] == p.parent.name
    split = json.loads((tmp_path / "s" / "split.json").read_text())
    assert split["params"]["relabel"]["sha256"] == hashlib.sha256(fix.read_bytes()).hexdigest()
    assert sorted(data.rglob("*.jpeg")) == images
    assert hashlib.sha256(b"".join(p.read_bytes() for p in images)).hexdigest() == before

    # train takes the same file on its manifests and records it in leuko.json
    plain = tmp_path / "plain"
    assert invoke("split", str(data), "--out", str(plain), "--group-by", "none").code == 0
    done = invoke("train", "--train", str(plain / "train.csv"), "--val", str(plain / "val.csv"),
                  "--backbone", "compact", "--img", "48x48", "--batch", "8", "--epochs", "1",
                  "--relabel", str(fix), "--out", str(tmp_path / "run"))
    assert done.code == 0, done.stderr
    meta = json.loads((tmp_path / "run" / "leuko.json").read_text())
    assert meta["manifests"]["relabel"]["changed"] == 1
    assert meta["manifests"]["relabel"]["excluded"] == 1
    other = write_corrections(tmp_path / "other.csv", [["/elsewhere/x.png", "", "", "", "",
                                                       "A", classes[0], "t"]])
    invoke("split", str(data), "--out", str(tmp_path / "s2"), "--relabel", str(other)
           ).one_line_error(2, "name no image of this data")


def test_cv_folds_carry_the_relabels(tiny_dataset, tmp_path: Path) -> None:
    """cv plans its folds from the relabelled data (folds.csv), and each fold trains on
    those labels as they are; a continued run with another relabel file is refused."""
    from leukocli.errors import LeukoError
    from leukocli.training.cv import CVPlan, prepare
    from leukocli.training.options import TrainOptions

    data = tiny_dataset(per_class=4, size=(64, 64), siblings=1)
    images = sorted(data.rglob("*.jpeg"))
    a, b = images[0], images[5]
    to = next(c for c in sorted({p.parent.name for p in images}) if c != a.parent.name)
    fix = write_corrections(tmp_path / "relabel.csv", [
        [str(a), "", "", "", "", a.parent.name, to, "t"],
        [str(b), "", "", "", "", b.parent.name, "UNCLASSIFIABLE", "t"]])
    opts = TrainOptions(backbone="compact", relabel=str(fix))
    table = prepare(tmp_path / "run", CVPlan(str(data), 2, "none", None, 1, opts))
    label = dict(zip(table["path"], table["label"], strict=True))
    assert label[str(a)] == to and str(b) not in label and len(label) == len(images) - 1
    other = write_corrections(tmp_path / "other.csv", [[str(a), "", "", "", "",
                                                       a.parent.name, a.parent.name, "t"]])
    with pytest.raises(LeukoError, match="relabel"):
        prepare(tmp_path / "run", CVPlan(str(data), 2, "none", None, 1,
                                         TrainOptions(backbone="compact", relabel=str(other))))
