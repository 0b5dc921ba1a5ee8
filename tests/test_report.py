"""evaluation/report.py: report.html after --eval, checked in a real headless browser (Chromium driven by
Playwright): no console errors, every video playable with the rollout's duration, the numbers of
result_policy_best.txt on the page."""
import re
import shutil

import pytest

from constants import DT
from evaluation.report import reward_stages
from evaluation.rollout import eval_bc
from tests.helpers import TINY_ACT_CONFIG, eval_config, start_pose_stats, write_tiny_checkpoint

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
STEPS = 10  # control steps per rollout in eval_config


@pytest.fixture(scope='module')
def evaluated(tmp_path_factory):
    """A tiny policy evaluated on 2 sim rollouts with videos -> the checkpoint folder."""
    ckpt_dir = tmp_path_factory.mktemp('report')
    write_tiny_checkpoint(ckpt_dir, TINY_ACT_CONFIG, start_pose_stats([0, -0.96, 1.16, 0, -0.3, 0], 0.5, 0.05))
    eval_bc(eval_config(ckpt_dir, TINY_ACT_CONFIG), 'policy_best.ckpt')
    return ckpt_dir


def test_reward_stages_count_rollouts_reaching_each_reward():
    assert reward_stages([0, 4, 2, 4], 4) == [(0, 4, 1.0), (1, 3, 0.75), (2, 3, 0.75), (3, 2, 0.5), (4, 2, 0.5)]


def test_the_report_says_what_was_evaluated_and_what_each_stage_means(evaluated):
    page = (evaluated / 'report.html').read_text()
    assert '<th>Task</th><td>sim_transfer_cube_scripted</td>' in page
    assert '<th>Checkpoint</th><td>policy_best.ckpt: the lowest validation loss</td>' in page
    assert re.search(r'<th>Evaluated</th><td>\d{4}-\d\d-\d\d \d\d:\d\d UTC</td>', page)
    assert "<th>Execution</th><td>synchronous (the original&#x27;s)</td>" in page
    assert '<th>Motion</th><td>largest joint change in one step ' in page
    assert '<td>the left gripper holds it alone (success)</td>' in page and '<td>it lifts the cube</td>' in page


def test_checkpoint_training_in_words():
    from evaluation.report import checkpoint_training
    config = {'training': {'num_steps': 2400, 'num_epochs': 2000}}
    assert checkpoint_training('policy_last.ckpt', config) == 'the end of training (2,400 steps)'
    assert checkpoint_training('policy_step_2100_seed_0.ckpt', config) == 'step 2,100 of 2,400 steps'
    epochs = {'training': {'num_epochs': 50}}
    assert checkpoint_training('policy_epoch_30_seed_0.ckpt', epochs) == 'epoch 30 of 50 epochs'
    assert checkpoint_training('policy_best.ckpt', None) == 'the lowest validation loss'


def test_the_report_holds_the_results_videos_and_config(evaluated):
    page = (evaluated / 'report.html').read_text()
    assert page.count('<video ') == 2 and 'src="video0.mp4"' in page and 'src="video1.mp4"' in page
    assert '"policy_class"' not in page and 'no config.json in this folder' in page  # a folder of the original's
    assert 'http' not in page  # nothing fetched from the network


@pytest.mark.skipif(CHROMIUM is None, reason='no Chromium on this machine (.ci/run installs it from the system packages)')
def test_the_report_works_in_a_headless_browser(evaluated):
    playwright = pytest.importorskip('playwright.sync_api', reason='playwright is in requirements.txt')
    result = (evaluated / 'result_policy_best.txt').read_text()
    errors = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox'])
        try:
            page = browser.new_page()
            page.on('console', lambda message: errors.append(message.text) if message.type == 'error' else None)
            page.on('pageerror', lambda error: errors.append(str(error)))
            page.goto((evaluated / 'report.html').as_uri())
            videos = page.evaluate("""() => Promise.all([...document.querySelectorAll('video')].map(v =>
                new Promise(resolve => {
                    const done = () => resolve({ready: v.readyState, duration: v.duration, error: v.error && v.error.code});
                    if (v.readyState >= 3) return done();
                    v.addEventListener('canplay', done, {once: true});
                    v.addEventListener('error', done, {once: true});
                    v.preload = 'auto';
                    v.load();
                })))""")
            numbers = {key: page.inner_text(f'#{key}') for key in ('success-rate', 'average-return', 'num-rollouts')}
            stages = page.inner_text('#reward-stages')
        finally:
            browser.close()
    assert errors == []
    assert len(videos) == 2
    for video in videos:
        assert video['error'] is None and video['ready'] >= 3
        assert video['duration'] == pytest.approx(STEPS * DT, abs=2 * DT)
    assert f"Success rate: {numbers['success-rate']}\n" in result
    assert f"Average return: {numbers['average-return']}\n" in result and numbers['num-rollouts'] == '2'
    for line in re.findall(r'Reward >= (\d+): (\d+/\d+) = (\S+)%', result):
        assert f'Reward \u2265 {line[0]}\t{line[1]}\t{line[2]}%' in stages
