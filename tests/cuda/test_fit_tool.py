"""tools/fit.py --device cuda: the demo config (keypoint LM stages plus a silhouette Adam
stage), run as users run it, against the same run on the CPU."""
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from smilfit.datasets import generate_synthetic_dataset
from tests.conftest import REPO_ROOT, subprocess_env

pytestmark = pytest.mark.gpu


def test_fit_tool_on_cuda_matches_cpu(tmp_path):
    data = tmp_path / 'syn.h5'
    generate_synthetic_dataset(data, num_sessions=1, frames_per_session=4, num_views=3,
                               image_size=96, fill=0.9, masks=True, progress=False, seed=2)
    demo = REPO_ROOT / 'configs' / 'fitting' / 'demo_mouse.py'
    cfg = tmp_path / 'cfg.py'
    # Handlers and stages appended in Python (config merging replaces lists).
    from mmengine.config import Config
    base = Config.fromfile(str(demo)).to_dict()['registrant']
    handlers = base['handlers'] + [dict(
        type='SilhouetteHandler', name='silhouette', weight=1.0,
        renderer=dict(type='SoftSilhouetteRenderer', sigma=1.0),
        loss=dict(type='SilhouetteLoss', mode='iou'))]
    stages = [dict(s, loss_weights=dict(s.get('loss_weights', {}), silhouette=0.0))
              for s in base['stages']]
    stages.append(dict(name='silhouette', fit=['global_orient', 'transl'], n_iter=3,
                       optimizer=dict(type='Adam', lr=1e-3)))
    cfg.write_text(f"_base_ = [{str(demo)!r}]\n"
                   f"data = dict(_delete_=True, path={str(data)!r}, batch_size=4)\n"
                   f"registrant = dict(hooks=[], handlers={handlers!r}, stages={stages!r})\n"
                   "visualize = dict(video=False, meshes=False, animation=False, plots=False)\n")
    runs = {}
    for device in ('cpu', 'cuda'):
        work = tmp_path / device
        proc = subprocess.run([sys.executable, str(REPO_ROOT / 'tools' / 'fit.py'), str(cfg),
                               '--work-dir', str(work), '--device', device, '--no-progress'],
                              capture_output=True, text=True, cwd=tmp_path,
                              env=subprocess_env())
        assert proc.returncode == 0, proc.stderr[-3000:]
        with h5py.File(work / 'fit_results.h5') as f:
            runs[device] = dict(joints=f['joints'][:], sil=f['losses/silhouette'][:],
                                history=json.loads(f.attrs['loss_history']))
        quality = json.loads((work / 'fit_quality.json').read_text())
        assert quality['failed_samples'] == [] and quality['overall']['median_px'] < 1.0
        assert (work / 'fitted_keypoints.slp').is_file()
    cpu, gpu = runs['cpu'], runs['cuda']
    assert [h['stage'] for h in gpu['history']] == [h['stage'] for h in cpu['history']]
    assert gpu['history'][-1]['stage'] == 'silhouette'
    extent = float(np.ptp(cpu['joints'].reshape(-1, 3), axis=0).max())
    np.testing.assert_allclose(gpu['joints'], cpu['joints'], rtol=0, atol=1e-3 * extent)
    np.testing.assert_allclose(gpu['sil'], cpu['sil'], rtol=1e-3, atol=1e-4)
