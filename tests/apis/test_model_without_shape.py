"""A rigged model without shape coefficients (K = 0, e.g. a rat converted from a skinned
mesh) goes through the whole path: body model at any batch size, synthetic dataset, fit,
.slp export, visuals."""
import json

import torch

from smilfit.body_models import SMILModel
from smilfit.body_models.demo_model import demo_model_data
from smilfit.body_models.io import save_model_data
from smilfit.cli.fit import main as fit_main
from smilfit.datasets import DatasetReader

from ..conftest import REPO_ROOT


def test_forward_with_no_shape_directions_at_every_batch_size():
    data = demo_model_data(num_betas=0)
    assert data.num_betas == 0
    model = SMILModel(data=data, factored_min_batch=16)
    torch.manual_seed(0)
    pose = 0.2 * torch.randn(32, model.num_joints - 1, 3)
    big = model(body_pose=pose, return_vertices=True).vertices          # factored path
    small = torch.cat([model(body_pose=pose[i:i + 4], return_vertices=True).vertices
                       for i in range(0, 32, 4)])                       # chunked path
    torch.testing.assert_close(big, small, rtol=1e-5, atol=1e-5)


def test_fit_export_and_visuals(tmp_path):
    model_path = tmp_path / 'rat.json'
    save_model_data(demo_model_data(num_betas=0), model_path)
    demo = REPO_ROOT / 'configs' / 'fitting' / 'demo_mouse.py'
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f"_base_ = [{str(demo)!r}]\n"
                   f"body_model = dict(_delete_=True, type='SMILModel', "
                   f"model_path={str(model_path)!r})\n"
                   f"data = dict(path={str(tmp_path / 'data.h5')!r}, batch_size=4, "
                   "synthetic=dict(num_sessions=1, frames_per_session=4, num_views=2, "
                   "image_size=64, masks=False))\n"
                   "visualize = dict(video=False, meshes=True, animation=True, plots=True)\n")
    work = tmp_path / 'work'
    assert fit_main([str(cfg), '--work-dir', str(work), '--no-progress']) == 0
    assert DatasetReader(tmp_path / 'data.h5').read([0])['params']['betas'].shape == (1, 0)
    quality = json.loads((work / 'fit_quality.json').read_text())
    assert quality['failed_samples'] == [] and quality['overall']['median_px'] < 1.0
    assert (work / 'fitted_keypoints.slp').is_file()
    assert len(list((work / 'visuals' / 'meshes').rglob('*.obj'))) == 4
