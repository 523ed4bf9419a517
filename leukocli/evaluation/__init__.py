"""Using trained models: predictions, metrics, evaluation outputs and plots."""

INFER_BATCH = 64  # images per inference batch: the default of predict and evaluate
