"""File descriptor 2 held for a block: where C++ libraries (TensorFlow, LiteRT) write their
start-up notices, below Python's sys.stderr, so leuko can keep them from standing among
its own lines and show them only when they explain a failure."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Held:
    """What reached descriptor 2 during the block (filled in when the block ends)."""

    data: bytes = b""


@contextmanager
def holding_fd2() -> Iterator[Held]:
    """Descriptor 2 into a temporary file for the block; it is itself again afterwards,
    whatever happened inside, and the bytes are in the yielded Held."""
    held = Held()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield held
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            held.data = captured.read()
