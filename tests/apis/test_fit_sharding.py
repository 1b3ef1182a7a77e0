"""tools/fit.py --launcher pytorch: two CPU processes (torchrun, gloo) give the one-process fit."""
import subprocess
import sys

import h5py
import numpy as np

from smilfit.datasets import generate_synthetic_dataset

from ..conftest import REPO_ROOT, subprocess_env


def _fit(cmd, env, cwd):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    # every rank's exception line, then the tail (torchrun's own report fills the end)
    errors = [line for line in res.stderr.splitlines() if 'Error' in line]
    assert res.returncode == 0, '\n'.join(errors[:20]) + res.stdout[-2000:] + res.stderr[-3000:]


def test_two_ranks_equal_one_process(tmp_path):
    data = tmp_path / 'syn.h5'
    generate_synthetic_dataset(data, num_sessions=2, frames_per_session=3, num_views=2,
                               image_size=64, masks=False, progress=False, seed=5)
    env = subprocess_env(OMP_NUM_THREADS='1')
    opts = ['--cfg-options', f'data.path={data}', 'data.batch_size=2', 'data.synthetic=None',
            '--no-progress', '--no-slp', '--no-visualize']
    config = str(REPO_ROOT / 'configs' / 'fitting' / 'demo_mouse.py')
    _fit([sys.executable, str(REPO_ROOT / 'tools' / 'fit.py'), config, '--work-dir',
          str(tmp_path / 'one')] + opts, env, tmp_path)
    _fit([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
          '--master_port=29671', str(REPO_ROOT / 'tools' / 'fit.py'), config,
          '--work-dir', str(tmp_path / 'two'), '--launcher', 'pytorch'] + opts, env, tmp_path)
    with h5py.File(tmp_path / 'one' / 'fit_results.h5') as a, \
            h5py.File(tmp_path / 'two' / 'fit_results.h5') as b:
        np.testing.assert_array_equal(a['samples/index'][:], b['samples/index'][:])
        np.testing.assert_allclose(a['joints'][:], b['joints'][:], rtol=0, atol=1e-5)
    # every batch was fitted (rank 0 took batches 0 and 2, rank 1 batch 1) and merged
    assert len(list((tmp_path / 'two' / 'chunks').glob('batch_*.npz'))) == 3
