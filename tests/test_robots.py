"""real_robot/robots/: a real task's robot is the one its config names, and a robot registered once
is what evaluation and replay open for the tasks that name it."""
import pytest

import real_robot
import replay_episodes
from real_robot import robots


def test_a_registered_robot_is_opened_for_the_tasks_that_name_it(monkeypatch):
    opened = []

    def followers(task_config, driver, camera_names, image_size, backend, realtime):
        opened.append((task_config['robot'], driver, camera_names, backend))
        return 'the arms'
    monkeypatch.setattr(robots, 'ROBOTS', dict(robots.ROBOTS))
    robots.register_robot(robots.Robot('toy_arm', followers))
    monkeypatch.setitem(real_robot.TASK_CONFIGS, 'toy_task', {'robot': 'toy_arm', 'camera_names': ['front']})
    assert real_robot.make_eval_env(driver='sim', camera_names=['front'], task_name='toy_task') == 'the arms'
    assert replay_episodes.make_env({'task_name': 'toy_task', 'robot_driver': 'sim'}) == 'the arms'
    assert opened == [('toy_arm', 'sim', ['front'], 'builtin'), ('toy_arm', 'sim', [], 'builtin')]
    with pytest.raises(ValueError, match='--robot_backend aloha_scripts: the toy_arm robot runs on builtin'):
        real_robot.make_eval_env(backend='aloha_scripts', task_name='toy_task')


def test_a_task_naming_no_known_robot_is_refused_by_name(monkeypatch):
    monkeypatch.setitem(real_robot.TASK_CONFIGS, 'odd_task', {'robot': 'hexapod'})
    with pytest.raises(KeyError, match="odd_task: robot 'hexapod' is not one of aloha, .*so"):
        real_robot.make_eval_env(task_name='odd_task')
    monkeypatch.setitem(real_robot.TASK_CONFIGS, 'old_so_task', {'followers': ['so_follower']})
    with pytest.raises(KeyError, match="old_so_task: the task names follower arms but no robot: add its 'robot'"):
        real_robot.make_eval_env(task_name='old_so_task')
    assert robots.robot_of({}).name == 'aloha'  # the original's robot when a task names none
