"""The learn_pose_prior command: inputs (.npz, .h5), errors, output file."""
import subprocess
import sys

import h5py
import numpy as np
import pytest

from smilfit.cli.learn_pose_prior import main
from smilfit.losses import load_gmm_prior
from tests.conftest import REPO_ROOT


def poses(n=400, seed=0):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.normal(-1.0, 0.2, (n // 2, 2, 3)),
                        rng.normal(1.0, 0.2, (n - n // 2, 2, 3))])
    p[:3] = np.nan
    return p


def test_npz_input(tmp_path, capsys):
    src = tmp_path / 'fits.npz'
    np.savez(src, body_pose=poses())
    out = tmp_path / 'prior.npz'
    rc = main([str(src), '-o', str(out), '-n', '2', '--iters', '30', '--no-progress'])
    assert rc == 0
    captured = capsys.readouterr()
    assert 'dropped 3 of 400' in captured.err and 'wrote' in captured.out
    prior = load_gmm_prior(out)
    assert prior['pose_shape'] == (2, 3) and prior['means'].shape == (2, 6)
    assert prior['metadata']['source'] == 'fits.npz'
    assert prior['metadata']['n_samples'] == 397 and prior['metadata']['n_dropped'] == 3
    np.testing.assert_allclose(np.sort(prior['means'].mean(1)), [-1.0, 1.0], atol=0.05)
    # no overwrite without --overwrite
    assert main([str(src), '-o', str(out), '-n', '2', '--no-progress']) == 1
    assert 'exists' in capsys.readouterr().err
    assert main([str(src), '-o', str(out), '-n', '2', '--iters', '3', '--overwrite',
                 '--max-samples', '100']) == 0
    assert load_gmm_prior(out)['metadata']['n_samples'] == 100


def test_h5_input_with_group_key(tmp_path):
    src = tmp_path / 'fits.h5'
    with h5py.File(src, 'w') as f:
        f.create_dataset('fits/pose', data=poses().reshape(20, 20, 2, 3))
    out = tmp_path / 'prior.npz'
    assert main([str(src), '-o', str(out), '--key', 'fits/pose', '-n', '2', '--iters', '10',
                 '--no-progress']) == 0
    assert load_gmm_prior(out)['metadata']['n_samples'] == 397


def test_clear_errors(tmp_path, capsys):
    src = tmp_path / 'fits.npz'
    np.savez(src, other=np.zeros((10, 6)))
    out = tmp_path / 'prior.npz'
    assert main([str(src), '-o', str(out), '--no-progress']) == 1
    err = capsys.readouterr().err
    assert "no array 'body_pose'" in err and 'other (10, 6)' in err
    h5 = tmp_path / 'fits.h5'
    with h5py.File(h5, 'w') as f:
        f.create_dataset('a/b', data=np.zeros((5, 6)))
    assert main([str(h5), '-o', str(out), '--key', 'a', '--no-progress']) == 1
    assert 'is a group' in capsys.readouterr().err
    assert main([str(tmp_path / 'none.npz'), '-o', str(out), '--no-progress']) == 1
    assert 'not found' in capsys.readouterr().err
    assert main([str(src), '-o', str(tmp_path / 'prior.json')]) == 2
    assert main([str(src), '-o', str(out), '--key', 'other', '-n', '20',
                 '--no-progress']) == 1
    assert 'cannot fit' in capsys.readouterr().err
    assert not out.exists()


def test_tool_help():
    with pytest.raises(SystemExit) as exc:
        main(['--help'])
    assert exc.value.code == 0
    res = subprocess.run([sys.executable, str(REPO_ROOT / 'tools' / 'learn_pose_prior.py'),
                          '--help'], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and 'MaxMixturePosePrior' in res.stdout
