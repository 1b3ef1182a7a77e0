"""The loss plugin of docs/configs.md works as written: its module and config, saved as the
page shows them, fit the demo through tools/fit.py with the plugin as the pose prior."""
from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np

from ..conftest import REPO_ROOT, subprocess_env
from .page_blocks import python_block

PAGE = REPO_ROOT / 'docs' / 'configs.md'


def test_the_documented_loss_plugin_fits_the_demo(tmp_path):
    plugin = python_block(PAGE, '# my_lab/steep_pose_prior.py')
    assert len(plugin.strip().splitlines()) <= 16      # "in ten lines", give or take
    (tmp_path / 'my_lab').mkdir()
    (tmp_path / 'my_lab' / '__init__.py').write_text('')
    (tmp_path / 'my_lab' / 'steep_pose_prior.py').write_text(plugin)
    config = python_block(PAGE, '# my_config.py').replace(
        "'configs/fitting/demo_mouse.py'", repr(str(REPO_ROOT / 'configs' / 'fitting' /
                                                    'demo_mouse.py')))
    (tmp_path / 'my_config.py').write_text(config)
    work = tmp_path / 'work'
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / 'tools' / 'fit.py'), str(tmp_path / 'my_config.py'),
         '--work-dir', str(work), '--no-progress', '--no-visualize', '--no-slp',
         '--no-anipose', '--cfg-options', f'data.path={tmp_path / "data.h5"}',
         'data.synthetic.num_sessions=1', 'data.synthetic.frames_per_session=4',
         'data.synthetic.num_views=2', 'data.synthetic.masks=False'],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env=subprocess_env(tmp_path, OMP_NUM_THREADS='1'))
    assert run.returncode == 0, run.stderr[-3000:]
    with h5py.File(work / 'fit_results.h5') as f:
        pose = f['params/body_pose'][:].astype(np.float64)
        prior = f['losses/pose_prior'][:].astype(np.float64)
    steep = (pose.reshape(len(pose), -1) ** 4).sum(-1)
    l2 = (pose.reshape(len(pose), -1) ** 2).sum(-1)
    ratio = prior / steep
    # the plugin's value (times the handler's weight), not the L2 prior's
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-3)
    assert not np.allclose(prior / l2, (prior / l2)[0], rtol=1e-3)
