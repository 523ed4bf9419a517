"""The foundation a user meets first: instant help, --version, dataset scanning, and
one-line errors with exit code 2 instead of tracebacks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke, run_leuko
from PIL import Image

import leukocli
from leukocli.data.dataset import scan
from leukocli.errors import LeukoError

COMMANDS = ["dedupe", "split", "train", "evaluate", "predict", "synth", "demo"]


def _image(path: Path, size: tuple[int, int] = (24, 32), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF"}
    Image.fromarray(pixels).save(path, format=fmt[path.suffix.lower()])
    return path


# --------------------------------------------------------------------------- help and version
def test_help_never_imports_tensorflow() -> None:
    """Help must stay instant: neither the root help nor any command's help loads TF."""
    script = textwrap.dedent(
        f"""
        import contextlib, io, json, sys
        from leukocli.cli import app
        seen = {{}}
        for argv in [["--help"]] + [[c, "--help"] for c in {COMMANDS!r}]:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = app(argv, standalone_mode=False)
            seen[" ".join(argv)] = {{
                "code": code,
                "tf": "tensorflow" in sys.modules or "keras" in sys.modules,
                "usage": "Usage" in out.getvalue(),
            }}
        print(json.dumps(seen))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(seen) == len(COMMANDS) + 1
    for argv, result in seen.items():
        assert result["code"] == 0, argv
        assert result["usage"], f"{argv} printed no usage"
        assert not result["tf"], f"`leuko {argv}` imported TensorFlow"


def test_console_script_help_lists_the_commands_and_version() -> None:
    """The installed console script itself (a real process), as a user first meets it."""
    proc = run_leuko("--help")
    assert proc.code == 0, proc.stderr
    for command in COMMANDS:
        assert command in proc.stdout
    version = invoke("--version")
    assert version.code == 0
    assert version.stdout.strip() == f"leuko {leukocli.__version__}"


def test_command_help_is_reflowed_and_keeps_literal_brackets() -> None:
    """Docstrings become help paragraphs: no source line breaks mid-sentence, and text like
    `leukocli[onnx]` is shown, not swallowed as a Rich style tag."""
    import typer.main

    from leukocli.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for name, cmd in commands.items():
        for paragraph in (cmd.help or "").split("\n\n"):
            assert "\n" not in paragraph, (name, paragraph)
    export = invoke("export", "--help", env={"COLUMNS": "200"})
    assert "leukocli[onnx]" in export.stdout and "leukocli[litert]" in export.stdout


# --------------------------------------------------------------------------- folder scanning
def test_scan_class_folders_mixed_case_extensions_and_hidden_files(tmp_path: Path) -> None:
    root = tmp_path / "data"
    # created out of order: class names must come back sorted, whatever the file system says
    _image(root / "NEUTROPHIL" / "a.JPG")
    _image(root / "NEUTROPHIL" / "b.Jpeg")
    _image(root / "EOSINOPHIL" / "c.png")
    _image(root / "EOSINOPHIL" / "d.PNG")
    _image(root / "EOSINOPHIL" / "sub" / "e.bmp")
    _image(root / "LYMPHOCYTE" / "f.TIF")
    _image(root / "LYMPHOCYTE" / "g.jpeg")
    (root / "LYMPHOCYTE" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    _image(root / ".thumbnails" / "h.jpg")  # a hidden folder is not a class
    _image(root / "NEUTROPHIL" / ".hidden.jpg")

    ds = scan(root)

    assert ds.classes == ["EOSINOPHIL", "LYMPHOCYTE", "NEUTROPHIL"]
    assert ds.problems == []
    got = sorted((r.label, r.rel) for r in ds.records)
    assert got == [
        ("EOSINOPHIL", "EOSINOPHIL/c.png"),
        ("EOSINOPHIL", "EOSINOPHIL/d.PNG"),
        ("EOSINOPHIL", "EOSINOPHIL/sub/e.bmp"),
        ("LYMPHOCYTE", "LYMPHOCYTE/f.TIF"),
        ("LYMPHOCYTE", "LYMPHOCYTE/g.jpeg"),
        ("NEUTROPHIL", "NEUTROPHIL/a.JPG"),
        ("NEUTROPHIL", "NEUTROPHIL/b.Jpeg"),
    ]
    assert all(r.path.is_absolute() and r.path.is_file() for r in ds.records)
    assert ds.counts() == {"EOSINOPHIL": 3, "LYMPHOCYTE": 2, "NEUTROPHIL": 2}


def test_scan_is_deterministic(synth_dir: Path) -> None:
    first, second = scan(synth_dir), scan(synth_dir)
    assert [r.rel for r in first.records] == [r.rel for r in second.records]
    assert first.classes == ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]


def test_unreadable_files_are_problems_not_crashes(tmp_path: Path, synth_dir: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(synth_dir, root)
    planted = json.loads((root / "planted.json").read_text())
    (root / "MONOCYTE" / "notes.txt").write_text("not a picture")
    (root / "MONOCYTE" / "empty.jpg").write_bytes(b"")
    (root / "LYMPHOCYTE" / "text.png").write_text("this is text with a .png name")

    ds = scan(root)

    problems = {p.rel: p.reason for p in ds.problems}
    expected = {
        *planted["corrupt"],
        "MONOCYTE/notes.txt",
        "MONOCYTE/empty.jpg",
        "LYMPHOCYTE/text.png",
    }
    assert set(problems) == expected
    assert all(reason for reason in problems.values())
    usable = {r.rel for r in ds.records}
    assert not usable & expected
    n_files = sum(1 for f in root.rglob("*") if f.is_file() and f.parent != root)
    assert len(usable) + len(problems) == n_files


# --------------------------------------------------------------------------- CSV manifests
def test_scan_manifest_resolves_paths_against_the_csv_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    a = _image(project / "images" / "a.jpg")
    _image(project / "images" / "b.png")
    elsewhere = _image(tmp_path / "elsewhere" / "c.jpg")
    manifest = project / "lists" / "train.csv"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(
        "path,label,group\n"
        "../images/a.jpg,MONOCYTE,cell1\n"
        "../images/b.png,EOSINOPHIL,cell1\n"
        f"{elsewhere},MONOCYTE,\n"
    )
    monkeypatch.chdir(tmp_path)  # not the CSV's folder: paths must not depend on the cwd

    ds = scan(manifest)

    assert ds.layout == "csv"
    assert ds.classes == ["EOSINOPHIL", "MONOCYTE"]
    assert ds.problems == []
    by_name = {r.path.name: r for r in ds.records}
    assert by_name["a.jpg"].path == a.resolve()
    assert by_name["a.jpg"].label == "MONOCYTE"
    assert by_name["a.jpg"].group == "cell1"
    assert by_name["b.png"].group == "cell1"
    assert by_name["c.jpg"].path == elsewhere.resolve()
    assert by_name["c.jpg"].group is None  # empty group cell: no group
    assert ds.has_groups


def test_scan_manifest_without_group_column(tmp_path: Path) -> None:
    _image(tmp_path / "x.jpg")
    _image(tmp_path / "y.jpg")
    (tmp_path / "m.csv").write_text("label,path\nLYMPHOCYTE,x.jpg\nNEUTROPHIL,y.jpg\n")
    ds = scan(tmp_path / "m.csv")
    assert [r.label for r in ds.records] == ["LYMPHOCYTE", "NEUTROPHIL"]
    assert not ds.has_groups


def test_scan_manifest_reports_missing_and_corrupt_rows(tmp_path: Path) -> None:
    _image(tmp_path / "ok.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    (tmp_path / "m.csv").write_text(
        "path,label\nok.jpg,MONOCYTE\nbad.jpg,MONOCYTE\nmissing.jpg,MONOCYTE\n"
    )
    ds = scan(tmp_path / "m.csv")
    assert [r.rel for r in ds.records] == ["ok.jpg"]
    assert {p.rel for p in ds.problems} == {"bad.jpg", "missing.jpg"}


# --------------------------------------------------------------------------- scan errors
def _no_class_folders(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "flat"
    _image(root / "a.jpg")
    return root, "class folder"


def _empty_class_folder(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "data"
    _image(root / "MONOCYTE" / "a.jpg")
    (root / "LYMPHOCYTE").mkdir()
    (root / "LYMPHOCYTE" / ".DS_Store").write_bytes(b"junk")
    return root, "LYMPHOCYTE"


def _csv_missing_column(tmp_path: Path) -> tuple[Path, str]:
    _image(tmp_path / "a.jpg")
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,label\na.jpg,MONOCYTE\n")
    return manifest, "'path'"


def _missing_path(tmp_path: Path) -> tuple[Path, str]:
    return tmp_path / "nope", "nope"


BAD_LAYOUTS = {
    "missing path": _missing_path,
    "no class folders": _no_class_folders,
    "empty class folder": _empty_class_folder,
    "csv missing a column": _csv_missing_column,
}


@pytest.mark.parametrize("case", list(BAD_LAYOUTS))
def test_scan_errors_name_the_problem(case: str, tmp_path: Path) -> None:
    path, fragment = BAD_LAYOUTS[case](tmp_path)
    with pytest.raises(LeukoError) as info:
        scan(path)
    message = str(info.value)
    assert "\n" not in message
    assert fragment in message


@pytest.mark.parametrize("command", ["split", "dedupe"])
@pytest.mark.parametrize("case", list(BAD_LAYOUTS))
def test_cli_bad_layout_is_one_line_error(command: str, case: str, tmp_path: Path) -> None:
    """Exit 2, one `error:` line, no traceback, and no output folder left behind."""
    path, fragment = BAD_LAYOUTS[case](tmp_path)
    extra = ["--out", str(tmp_path / "splits")] if command == "split" else []
    invoke(command, str(path), *extra, cwd=tmp_path).one_line_error(2, fragment)
    assert not (tmp_path / "splits").exists()


def test_cli_bad_size_is_one_line_error(tmp_path: Path) -> None:
    invoke("synth", str(tmp_path / "out"), "--size", "240x").one_line_error(
        2, "240x", "HEIGHTxWIDTH"
    )
    assert not (tmp_path / "out").exists()


def test_cli_refuses_to_write_into_a_non_empty_folder(tmp_path: Path) -> None:
    keep = tmp_path / "mine" / "notes.txt"
    keep.parent.mkdir()
    keep.write_text("precious")
    invoke("synth", str(keep.parent), "--per-class", "3", "--size", "48x64").one_line_error(
        2, "--force"
    )
    assert sorted(p.name for p in keep.parent.iterdir()) == ["notes.txt"]
