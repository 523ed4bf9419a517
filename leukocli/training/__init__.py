"""Training runs: options and recipes, the fit loop, callbacks and the run folder."""
