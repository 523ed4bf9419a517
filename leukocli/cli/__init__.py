"""The `leuko` command line: a thin shell over the core, and the only layer that prints.

Nothing here imports TensorFlow at module level, so `leuko --help` stays instant; each
command imports the core it needs inside its body.
"""

from __future__ import annotations

from importlib import import_module

from .._tf_quiet import quiet_tensorflow

quiet_tensorflow()  # the command line's terminal, not a library caller's process

from .app import app  # noqa: E402

# Each command module registers itself on import; this order is the order of `--help`.
COMMANDS = ("dedupe", "split", "train", "cv", "evaluate", "predict", "explain", "report",
            "audit", "count", "review", "export", "synth", "demo")
for _name in COMMANDS:
    import_module(f"{__name__}.{_name}")


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
