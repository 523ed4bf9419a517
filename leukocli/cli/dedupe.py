"""`leuko dedupe`: find copies and conflicts (dry run), quarantine them, or undo that."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import EXIT_PARTIAL, LeukoError
from .app import command
from .console import RichReporter, console, info, simple_table, warn

if TYPE_CHECKING:
    from ..curation.dedupe import Findings


@command()
def dedupe(
    data: Annotated[
        Path | None, typer.Argument(help="Dataset folder (DIR/<CLASS>/*.jpg) or CSV manifest.")
    ] = None,
    threshold: Annotated[
        int, typer.Option(help="Hamming distance (of 64 bits) for near-duplicate candidates.")
    ] = 10,
    transforms: Annotated[
        bool,
        typer.Option("--transforms/--no-transforms",
                     help="Also match flipped and 90-degree-rotated copies."),
    ] = True,
    report: Annotated[Path | None, typer.Option(help="Write the findings as JSON here.")] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Move duplicates and conflicts into quarantine.")
    ] = False,
    quarantine: Annotated[
        Path | None,
        typer.Option(help="Quarantine folder for --apply (default: DIR-quarantine beside DIR)."),
    ] = None,
    undo: Annotated[
        Path | None, typer.Option(help="Put back every file listed in this quarantine manifest.")
    ] = None,
    top: Annotated[int, typer.Option(help="How many of the largest groups to show.")] = 10,
) -> None:
    """Find exact and near-duplicate images, label conflicts and name collisions.

    Exit codes: 0 when the scan (and any apply or undo) ran, findings included; 1 when
    some file could not be moved; 2 for bad input; 130 when interrupted (an interrupted
    apply names its manifest and the undo command).
    """
    from ..curation.dedupe import check_threshold

    if top < 0:
        raise LeukoError(f"--top must be 0 or more (got {top})")
    check_threshold(threshold)
    if undo is not None:
        if data is not None or apply:
            raise LeukoError("--undo MANIFEST works alone: leave out DATA and --apply")
        _undo(undo)
        return
    if data is None:
        raise LeukoError("give a dataset folder or CSV manifest (or --undo MANIFEST)")
    if quarantine is not None and not apply:
        raise LeukoError("--quarantine only makes sense with --apply")
    _scan_and_apply(data, threshold, transforms, report, apply, quarantine, top)


def _scan_and_apply(
    data: Path, threshold: int, transforms: bool, report: Path | None, apply: bool,
    quarantine: Path | None, top: int,
) -> None:
    from .._util.files import atomic_write_json, ensure_writable_dir
    from ..curation.dedupe import find_duplicates
    from ..curation.quarantine import apply_quarantine, check_quarantine, undo_command

    if apply:
        if not data.exists():
            raise LeukoError(f"{data}: no such file or directory")
        check_quarantine(data, quarantine)  # fail before the scan, not after it
    if report is not None:
        ensure_writable_dir(report.parent, "report")
    reporter = RichReporter()
    findings = find_duplicates(data, threshold=threshold, transforms=transforms,
                               reporter=reporter)
    render(findings, top)
    info(f"{findings.candidates} hash candidates, {findings.pairs} confirmed links, "
         f"{findings.seconds:.1f} s")
    if report is not None:
        atomic_write_json(report, findings.to_dict())
        console.print(f"report: {report}", soft_wrap=True)
    if not apply:
        if findings.to_quarantine:
            console.print("dry run: nothing moved; --apply moves these into quarantine")
        return
    s = apply_quarantine(findings, quarantine, reporter)
    for note in s.notes:
        warn(note)
    if s.manifest is None:
        console.print("nothing to quarantine")
    else:
        console.print(f"moved {s.moved} file(s) into {s.manifest.parent}", soft_wrap=True)
        console.print(f"manifest: {s.manifest}", soft_wrap=True)
        console.print(f"undo with: {undo_command(s.manifest)}", soft_wrap=True)
    _fail_if(s.failed, "could not be moved")


def _undo(manifest: Path) -> None:
    from ..curation.quarantine import undo_quarantine

    s = undo_quarantine(manifest, RichReporter())
    console.print(
        f"restored {s.moved} file(s); {s.skipped} already in place; {len(s.failed)} problem(s)"
    )
    for note in s.notes:
        warn(note)
    _fail_if(s.failed, "could not be restored")


def _fail_if(failed: list[str], what: str) -> None:
    if not failed:
        return
    for line in failed[:20]:
        warn(line)
    if len(failed) > 20:
        warn(f"... and {len(failed) - 20} more")
    raise LeukoError(f"{len(failed)} file(s) {what} (see warnings above)", exit_code=EXIT_PARTIAL)


def render(findings: Findings, top: int) -> None:
    """The summary table and the largest groups, on stdout."""
    s = findings.summary()
    rows: list[list[object]] = [
        ["scanned", s["scanned"], ""],
        ["unreadable", s["unreadable"], "reported, left in place"],
        ["exact duplicate groups", s["exact_groups"], f"{s['exact_files']} files"],
        ["near duplicate groups", s["near_groups"], f"{s['near_files']} files"],
        ["label conflicts", s["conflict_groups"], f"{s['conflict_files']} files"],
        ["name collisions", s["name_collisions"], "same name in several classes (harmless)"],
        ["would be quarantined", s["to_quarantine"], "files --apply moves"],
    ]
    console.print(simple_table(f"dedupe {escape(str(findings.source))}",
                               ["finding", "count", "note"], rows))
    if findings.unreadable:
        urows: list[list[object]] = [
            [escape(rel), escape(why)] for rel, why in sorted(findings.unreadable.items())
        ]
        console.print(simple_table("Unreadable files", ["file", "reason"], urows[:top]))
        if len(urows) > top:
            console.print(f"... and {len(urows) - top} more (see --report)")
    if findings.groups and top > 0:
        console.print(_groups_table(findings, top))


def _groups_table(findings: Findings, top: int) -> Table:
    shown = min(top, len(findings.groups))
    table = Table(
        title=f"Largest groups (top {shown} of {len(findings.groups)}; * = kept)",
        title_justify="left",
    )
    table.add_column("#", justify="right")
    table.add_column("kind")
    table.add_column("files", justify="right")
    table.add_column("members", overflow="fold")
    for n, g in enumerate(findings.groups[:top], 1):
        lines = [
            f"{'*' if f == g.keep else ' '} {f}"
            + (f" [{lab}]" if findings.layout == "csv" or g.conflict else "")
            for f, lab in zip(g.files, g.file_labels, strict=True)
        ][:4]
        if len(g.files) > 4:
            lines.append(f"  ... +{len(g.files) - 4} more")
        kind = g.match + (" conflict" if g.conflict else "")
        if g.transforms and g.transforms != ["identity"]:
            kind += "\n(" + ", ".join(g.transforms) + ")"
        table.add_row(str(n), kind, str(len(g.files)), escape("\n".join(lines)))
    return table
