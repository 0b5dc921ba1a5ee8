"""Recording demonstrations: scripted episodes in simulation (sim.py) and teleoperated ones on the
real robot (robot.py)."""
