"""leuko: white-blood-cell micrographs in, a trained classifier and honest reports out."""

__version__ = "0.1.0"
