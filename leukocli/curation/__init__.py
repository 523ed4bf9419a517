"""Curating a dataset before training: duplicates, quarantine, sibling groups, splits."""
