"""Small helpers shared by every layer: union-find, bit counts, workers, safe file writes,
output locks and the progress-reporting protocol. Imports nothing else from leukocli."""
