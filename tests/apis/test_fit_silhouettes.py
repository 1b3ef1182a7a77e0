"""fit_dataset gives silhouette handlers the dataset's masks."""
import json

import h5py
import numpy as np
import torch
from mmengine.config import Config

from smilfit.apis.fitting import fit_dataset
from smilfit.datasets import generate_synthetic_dataset

from ..conftest import REPO_ROOT


def test_silhouette_stage_reads_masks_from_the_dataset(tmp_path):
    torch.set_num_threads(1)
    data = tmp_path / 'syn.h5'
    generate_synthetic_dataset(data, num_sessions=1, frames_per_session=2, num_views=2,
                               image_size=96, fill=0.9, masks=True, progress=False, seed=2)
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'fitting' / 'demo_mouse.py'))
    cfg.data = dict(path=str(data), batch_size=2)
    cfg.registrant.hooks = []
    cfg.registrant.handlers.append(dict(
        type='SilhouetteHandler', name='silhouette', weight=1.0,
        renderer=dict(type='SoftSilhouetteRenderer', sigma=1.0),
        loss=dict(type='SilhouetteLoss', mode='iou')))
    for stage in cfg.registrant.stages:   # LM stages: keypoints and priors only
        stage['loss_weights'] = dict(stage.get('loss_weights', {}), silhouette=0.0)
    cfg.registrant.stages.append(dict(name='silhouette', fit=['global_orient', 'transl'],
                                      n_iter=3, optimizer=dict(type='Adam', lr=1e-3)))
    results = fit_dataset(cfg, tmp_path / 'work', progress=False)
    with h5py.File(results) as f:
        iou_loss = f['losses/silhouette'][:]
        history = json.loads(f.attrs['loss_history'])
    # (without masks the handler would have raised) the soft-IoU loss is finite, the
    # silhouette stage ran, and the overlap is substantial
    assert iou_loss.shape == (2,) and np.isfinite(iou_loss).all()
    assert [h['stage'] for h in history][-1] == 'silhouette'
    assert np.all(iou_loss < 2 * 0.5), iou_loss    # per view: soft IoU > 0.5 (2 views)
