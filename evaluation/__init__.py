"""Evaluation: rollouts in simulation or on the robot (rollout.py) with their settings (settings.py),
offline evaluation against recorded episodes (offline.py), and the HTML report (report.py)."""
