"""The task guide "Your SLEAP session to 3D" (docs/sleap_session.md) works as written: its
bash blocks run in order on the shared 4-camera session, with the guide's own paths, and
leave the files the guide says they leave."""
from __future__ import annotations

import re
import subprocess

import pytest

from ..conftest import REPO_ROOT, child_env, shared_path
from .page_blocks import bash_blocks

GUIDE = REPO_ROOT / 'docs' / 'sleap_session.md'


def test_the_guide_has_runnable_blocks_for_every_step():
    blocks = bash_blocks(GUIDE.read_text())
    script = '\n'.join(blocks)
    for tool in ('preprocess_sleap.py', 'fit.py', 'view.py', 'test.py'):
        assert f'tools/{tool}' in script, tool
    assert re.search(r'^SESSION=\S+', script, re.M) and re.search(r'^WORK=\S+', script, re.M)


def test_the_guide_runs_on_the_shared_session(tmp_path):
    shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')
    shared_path('models', 'SMILy_Mouse_static_joints.pkl')
    script = '\n'.join(bash_blocks(GUIDE.read_text()))
    # The guide's work dir, moved out of the checkout; the shared paths stay as written.
    script = re.sub(r'^WORK=\S+', f'WORK={tmp_path / "my_session"}', script, flags=re.M)
    run = subprocess.run(['bash', '-euo', 'pipefail', '-c', script], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=900,
                         env=child_env(OMP_NUM_THREADS='1'))
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    work = tmp_path / 'my_session'
    for path in ('session.h5', 'fit/fit_results.h5', 'fit/fit_quality.txt',
                 'fit/fitted_keypoints.slp', 'fit_3cams/anipose/minimal_session.csv',
                 'scene.html', 'holdout/holdout_views.txt'):
        assert (work / path).is_file(), path
    # what step 4 says the report shows: the bad camera named
    report = (work / 'fit' / 'fit_quality.txt').read_text()
    assert 'Check the calibration of camera(s) side' in report
    assert 'camera(s) back' in (work / 'fit_3cams' / 'fit_quality.txt').read_text()
    assert 'cameras,' in run.stdout and 'nose at' in run.stdout     # step 6's snippet ran
    # The body model's edges between the session's keypoints (used where labels come
    # without a skeleton) form one tree, also where the root joint carries no keypoint.
    import h5py
    with h5py.File(work / 'fit' / 'fit_results.h5') as f:
        assert len(f['data_skeleton_edges']) == len(f['data_keypoint_names']) - 1
