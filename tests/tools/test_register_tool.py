"""tools/register.py: --help, a run on the demo mouse, errors, and sharding over ranks.

The distributed test starts two ranks (gloo on the CPU, torchrun's environment) and
checks that they produce exactly the single-process result (registration is
per-scan, so which process fits a scan must not matter).
"""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

TOOL = REPO_ROOT / 'tools' / 'register.py'
DEMO = REPO_ROOT / 'configs' / 'registration' / 'demo_mouse_synthetic.py'


def rigid_config(tmp_path, num_scans=3):
    """The demo config with tiny synthetic scans and only the rigid stage."""
    path = tmp_path / 'rigid.py'
    path.write_text(
        f"_base_ = [{str(DEMO)!r}]\n"
        "registrant = dict(stages=[dict(name='rigid', fit=['global_orient', 'transl'], "
        "n_iter=1, optimizer=dict(type='LBFGS', max_iter=40))])\n"
        f"data = dict(scan_dir={str(tmp_path / 'scans')!r}, num_points=300, batch_size=1, "
        f"synthetic=dict(num_scans={num_scans}, num_points=300, pose_std=0.0))\n")
    return path


def test_help():
    out = subprocess.run([sys.executable, str(TOOL), '--help'], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    assert 'register a folder of 3D scans' in out.stdout
    assert '--launcher' in out.stdout and '--resume' in out.stdout


def test_demo_config_runs_every_stage(tmp_path, monkeypatch, capsys):
    from smilfit.cli.register import main
    monkeypatch.chdir(tmp_path)
    rc = main([str(DEMO), '--work-dir', str(tmp_path / 'work'), '--no-progress',
               '--cfg-options', f'data.scan_dir={tmp_path / "scans"}', 'data.num_points=300',
               'data.synthetic.num_scans=2', 'data.synthetic.num_points=300'])
    assert rc == 0
    assert 'registered 2 scans' in capsys.readouterr().out
    with np.load(tmp_path / 'work' / 'registrations.npz') as z:
        for name in ('global_orient', 'transl', 'body_pose', 'betas', 'vertex_offsets'):
            assert name in z.files, name
        # Offsets are the fine detail: small next to the body (168 mm), not zero.
        offsets = np.linalg.norm(z['vertex_offsets'], axis=-1)
        assert 0 < offsets.mean() < 5.0
        assert z['error_scan_to_mesh_mean'].max() < 3.0       # mm
    assert sorted(p.name for p in (tmp_path / 'work' / 'meshes').iterdir()) == [
        'scan_0000.ply', 'scan_0001.ply']


def test_errors_are_reported(tmp_path, capsys):
    from smilfit.cli.register import main
    rc = main([str(rigid_config(tmp_path)), '--work-dir', str(tmp_path / 'w'),
               '--no-progress', '--cfg-options', 'registration.init=icp'])
    assert rc == 1
    assert "registration.init must be 'pca' or 'none'" in capsys.readouterr().err
    rc = main([str(rigid_config(tmp_path)), '--work-dir', str(tmp_path / 'w'),
               '--no-progress', '--cfg-options', 'data.scan_dir=/nonexistent/scans',
               'data.synthetic=None'])
    assert rc == 1
    assert 'scan folder not found' in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # three Python processes: ~20-35 s on 2 shared cores
def test_two_ranks_match_one_process(tmp_path):
    config = rigid_config(tmp_path)
    base = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    single = subprocess.run([sys.executable, str(TOOL), str(config), '--work-dir',
                             str(tmp_path / 'one'), '--no-progress'], env=base, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(base, MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                   LOCAL_RANK=str(rank), WORLD_SIZE='2')
        procs.append(subprocess.Popen(
            [sys.executable, str(TOOL), str(config), '--work-dir', str(tmp_path / 'two'),
             '--no-progress', '--launcher', 'pytorch'], env=env, cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + 120
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for rank, (proc, out) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f'rank {rank} failed:\n{out[-3000:]}'
    # Three batches of one scan: rank 0 wrote batches 0 and 2, rank 1 batch 1.
    chunks = sorted(p.name for p in (tmp_path / 'two' / 'chunks').glob('batch_*.npz'))
    assert chunks == ['batch_00000.npz', 'batch_00001.npz', 'batch_00002.npz']
    with np.load(tmp_path / 'one' / 'registrations.npz') as a, \
            np.load(tmp_path / 'two' / 'registrations.npz') as b:
        assert list(a['names']) == list(b['names'])
        for key in ('vertices', 'scan_vertices', 'global_orient', 'transl',
                    'error_scan_to_mesh_p95'):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-5, err_msg=key)
    summary = json.loads((tmp_path / 'two' / 'summary.json').read_text())
    assert summary['num_scans'] == 3
