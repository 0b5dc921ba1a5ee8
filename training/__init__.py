"""Training: the run's settings (settings.py), the data pipeline (data.py), the loop (loop.py),
metrics and logging (metrics.py), and a training start from the command line's settings (run.py)."""
