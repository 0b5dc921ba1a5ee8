"""The simulations a sim task runs in, each registered once: a sim task's config names its simulation
(`'simulation': 'so101'`; ALOHA's when it names none) and everything that builds, places, scripts or
records a simulated episode asks the simulation, never the task's name.

A simulation is a `Simulation`: its environment factory, object sampler, cameras, state size, the
camera shown on screen and its scripted demonstrator. The built-in ones (simulation/aloha.py: the
original's bimanual ViperX tasks, sim_env.py; simulation/so101.py: one SO-101 arm, so101_sim/) are
imported when first asked for; `register_simulation` adds another (docs/extending.md).
"""
import importlib
from dataclasses import dataclass
from typing import Callable

from constants import IMAGE_HW, SIM_TASK_CONFIGS
from tasks import canonical_task_name

DEFAULT_SIMULATION = 'aloha'  # the simulation of a sim task that names none: the original's tasks


@dataclass(frozen=True)
class Simulation:
    """How one simulated robot runs a task; every callable takes the task's (canonical) name first."""
    # (task_name, camera_names, image_size (H, W), seed, shadows) -> dm_control Environment
    make_env: Callable
    # (task_name, rng) -> flat object pose (7 values per object) for env.task.set_object_pose
    sample_object_pose: Callable
    # (task_name, camera_names) -> None; ValueError naming the cameras the model has
    check_camera_names: Callable
    # (task_name, env, settings: DemoSettings) -> a demonstrator whose rollout(rng) returns the joint targets
    # to replay in env (T + 1, state_dim), the object pose to replay them on and the rewards its rollout reached
    make_demonstrator: Callable
    # (task_name) -> None; ValueError when the task has no scripted demonstrations
    check_scripted: Callable
    state_dim: int  # qpos and action size of its episodes
    view_camera: str  # the camera --onscreen_render shows


@dataclass(frozen=True)
class DemoSettings:
    """What a scripted demonstrator is asked for by the recorder (recording/sim.py)."""
    episode_len: int  # control steps recorded; a rollout returns episode_len + 1 joint targets
    image_size: tuple  # (H, W) of what it shows on screen
    inject_noise: bool  # the original's --inject_noise: disturbed scripted motions
    onscreen: bool  # show the scripted rollout while it runs
    shadows: bool  # as the environment renders


_SIMULATIONS = {}  # name -> Simulation or 'module:NAME', imported when first asked for


def register_simulation(name, simulation):
    """Make `simulation` (a Simulation, or 'module:NAME' naming one) the simulation of the sim tasks
    whose config says `'simulation': name`."""
    _SIMULATIONS[name] = simulation


register_simulation('aloha', 'simulation.aloha:ALOHA')
register_simulation('so101', 'simulation.so101:SO101')


def get_simulation(name):
    """The Simulation registered as `name` (imported on demand)."""
    if name not in _SIMULATIONS:
        raise ValueError(f"unknown simulation '{name}': expected one of {', '.join(_SIMULATIONS)}")
    source = _SIMULATIONS[name]
    if isinstance(source, str):
        module, attribute = source.split(':')
        source = _SIMULATIONS[name] = getattr(importlib.import_module(module), attribute)
    return source


def simulation_of(task_name):
    """The Simulation a sim task (short names too) runs in. NOTE(faithful): a name without a config is
    ALOHA's, which tells its scene by the name as the original's make_sim_env does ('sim_insertion' in it)."""
    config = SIM_TASK_CONFIGS.get(canonical_task_name(task_name), {})
    return get_simulation(config.get('simulation', DEFAULT_SIMULATION))


def make_sim_env(task_name, camera_names=None, image_size=IMAGE_HW, seed=None, shadows=True):
    """Joint-space environment of any sim task, built by its simulation; arguments as sim_env.make_sim_env
    (camera_names None: the simulation's own cameras)."""
    return simulation_of(task_name).make_env(task_name, camera_names, image_size, seed, shadows)


def sample_object_pose(task_name, rng):
    """A sim task's flat object pose for env.task.set_object_pose, drawn from `rng` by its simulation."""
    return simulation_of(task_name).sample_object_pose(task_name, rng)
