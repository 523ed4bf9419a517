"""Pascal VOC annotations: the white cells' boxes that `leuko count --eval` scores against
(BCCD's layout: JPEGImages/NAME.jpg beside Annotations/NAME.xml)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from ..errors import LeukoError, ParameterError, opt

NOT_WHITE = {"rbc", "red blood cell", "erythrocyte", "platelet", "platelets", "plt"}


def read_voc(xml: Path) -> list[tuple[str, tuple[float, ...]]]:
    """(name, box) of the white cells in a Pascal VOC file: every object but red cells and
    platelets (named WBC, or by its class)."""
    try:
        root = ET.parse(xml).getroot()
    except (ET.ParseError, OSError) as exc:
        raise LeukoError(f"{xml} is not a readable Pascal VOC annotation ({exc})") from None
    out = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name and name.lower() not in NOT_WHITE:
            b = obj.find("bndbox")
            if b is not None:
                try:
                    box = tuple(float(b.findtext(t) or 0) for t in
                                ("xmin", "ymin", "xmax", "ymax"))
                except ValueError:
                    raise LeukoError(f"{xml}: a box of {name!r} has a corner that is not a "
                                     "number; not a Pascal VOC annotation") from None
                out.append((name, box))
    return out


def check_annotations(photos: Sequence[Path]) -> int:
    """Read every photo's annotation before anything is counted: a malformed one, or none
    at all, is refused in one line instead of a score of 0 (or a traceback) at the end.
    Returns how many photos have one."""
    found = [a for a in (annotation_for(p) for p in photos) if a is not None]
    if not found:
        raise ParameterError("evaluate", f"{opt('evaluate')}: none of the photos has a Pascal "
                                         "VOC annotation "
                         "(Annotations/NAME.xml beside JPEGImages/, or NAME.xml beside the "
                         "photo), so there is nothing to score")
    for xml in found:
        read_voc(xml)
    return len(found)


def annotation_for(photo: Path) -> Path | None:
    """VOC layout: JPEGImages/NAME.jpg beside Annotations/NAME.xml (or NAME.xml beside it)."""
    for cand in (photo.parent.parent / "Annotations" / f"{photo.stem}.xml",
                 photo.with_suffix(".xml")):
        if cand.is_file():
            return cand
    return None
