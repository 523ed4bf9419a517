"""Whole smear photos: locate every white cell, classify each, the differential count."""
