"""Using trained models: predictions, metrics, evaluation outputs and plots."""
