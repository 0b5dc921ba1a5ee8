"""bench/: every benchmark runs (at tiny sizes) and prints its JSON report."""
import json
import subprocess
import sys

import pytest

from bench.__main__ import SUITE
from tests.helpers import ROOT


@pytest.mark.slow
def test_smoke_suite_prints_every_report():
    done = subprocess.run([sys.executable, '-m', 'bench', '--smoke'], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert set(report) == set(SUITE)
    assert report['policy_latency']['cpu']['act_query']['max_abs_diff_fp32'] < 1e-4
    assert report['train_step']['cases']['small_off']['max_rel_diff_vs_reference'] < 1e-5
    assert report['real_robot_loop']['achieved_hz'] > 0 and report['real_robot_loop']['so101']['achieved_hz'] > 0
    deployed = report['deploy_latency']['configs']['cpu_recipe']['threads_1']
    assert deployed['onnxruntime_fp32']['max_abs_diff_vs_eager_fp32'] < 1e-4
