"""Data in: scanning class folders and manifests into Records, and synthetic datasets."""
