"""The command line of imitate_episodes.py: its flags (flags.py), LeRobot's names for them
(lerobot_names.py), flags -> run settings (run_config.py), the checks of the data a training start reads
(data_check.py), the three commands (commands.py) and how a script ends on bad input (errors.py)."""
