"""Safety: target clamping and the policy watchdog. Every limit is a name in settings.py."""
import threading
import time

import numpy as np

from real_robot import settings


def clamp_arm_targets(targets, previous, limits, max_step):
    """Clamp arm joint targets (6,) to joint limits (6, 2), then to within max_step of previous."""
    limits = np.asarray(limits, dtype=float)
    clamped = np.clip(np.asarray(targets, dtype=float), limits[:, 0], limits[:, 1])
    if previous is not None:
        clamped = np.clip(clamped, previous - max_step, previous + max_step)
    return clamped


def clamp_gripper_command(normalized):
    low, high = settings.GRIPPER_COMMAND_RANGE
    return float(np.clip(normalized, low, high))


class Watchdog:
    """Background thread: when kick() has not been called for POLICY_STALL_S while armed, call
    on_stall() once (the env re-commands the present position), and again only after new kicks."""

    def __init__(self, on_stall, name='watchdog'):
        self._on_stall = on_stall
        self._last_kick = time.monotonic()
        self._armed = False
        self._fired = False
        self.stalls = 0  # number of stalls seen, for diagnostics
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def kick(self):
        self._last_kick = time.monotonic()
        self._armed, self._fired = True, False

    def disarm(self):
        self._armed = False

    def _run(self):
        while not self._stop.wait(settings.WATCHDOG_PERIOD_S):
            idle = time.monotonic() - self._last_kick
            if self._armed and not self._fired and idle > settings.POLICY_STALL_S:
                self._fired = True
                self.stalls += 1
                self._on_stall(idle)

    def close(self):
        self._stop.set()
        self._thread.join(timeout=1.0)
