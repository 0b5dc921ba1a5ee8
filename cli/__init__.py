"""The command line of imitate_episodes.py: its flags (flags.py), flags -> run settings (run_config.py),
and the checks of the data a training start reads (data_check.py)."""
