"""Training: the run's settings (settings.py), the data pipeline (data.py), the loop (loop.py),
metrics and logging (metrics.py), and what a start settles before the loop (start.py)."""
