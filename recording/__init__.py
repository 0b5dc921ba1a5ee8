"""Recording demonstrations: scripted episodes in simulation (sim.py)."""
