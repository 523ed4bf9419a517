"""Verifying leuko's classes by eye: the cells of a count, an audit or predictions,
on one page where a person reclassifies them and saves the corrections."""
