"""What ships inside the package, in leukocli/weights/: pretrained backbones (NAME.json
and its weights file, for --weights NAME) and whole classifiers (NAME/, a run folder,
for --model NAME). No TensorFlow here: resolving a name costs nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"  # shipped in the wheel


def shipped_weights() -> dict[str, dict[str, Any]]:
    """leuko's own pretrained backbones: name -> provenance (leukocli/weights/NAME.json)."""
    out: dict[str, dict[str, Any]] = {}
    for card in sorted(WEIGHTS_DIR.glob("*.json")):
        try:
            info = json.loads(card.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (WEIGHTS_DIR / str(info.get("file", ""))).is_file():
            out[card.stem] = info
    return out


def shipped_model(name: str) -> Path | None:
    """The run folder of leuko's shipped classifier `name` (e.g. wbc), None if not one.

    A shipped classifier is a whole leuko run (model.keras + leuko.json with its card)
    inside the package, so `--model wbc` works after install, offline, with no training.
    """
    key = (name or "").strip().lower()
    if not key or not key.isidentifier():
        return None
    run = WEIGHTS_DIR / key
    if (run / "model.keras").is_file() and (run / "leuko.json").is_file():
        return run
    return None


def is_shipped(run: Path | None) -> bool:
    """True for a run folder inside the package: outputs never go there."""
    if run is None:
        return False
    try:
        return Path(run).resolve().parent == WEIGHTS_DIR
    except OSError:
        return False


def shipped_models() -> list[str]:
    """Names of the shipped classifiers (--model NAME)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if shipped_model(p.name))
