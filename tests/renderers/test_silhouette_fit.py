"""Silhouette-only fitting of the stick insect through the registrant and the renderer.

From a perturbed pose (0.1 rad per joint axis, 2 % of the body length in translation)
back to masks rendered from the true pose: the rendered IoU must reach 0.95 in every
view. CI version: one frame, 3 views of 64 x 64, 40 Adam steps (a few seconds); the slow
version: 2 frames, 4 views of 128 x 128.
"""
import numpy as np
import pytest
import torch

from smilfit.body_models import SMILModel, load_model_data
from smilfit.datasets.synthetic import ring_cameras
from smilfit.registrants import SMILRegistrant
from smilfit.renderers import SoftSilhouetteRenderer

from tests.conftest import shared_path


def silhouette_fit(frames, views, size, n_iter, sigma=1.0, seed=0):
    model = SMILModel(data=load_model_data(shared_path('models', 'SMILy_STICK.pkl')))
    g = torch.Generator().manual_seed(seed)
    J = model.num_joints
    truth = dict(global_orient=0.2 * torch.randn(frames, 3, generator=g),
                 body_pose=0.15 * torch.randn(frames, J - 1, 3, generator=g),
                 transl=torch.zeros(frames, 3))
    verts = model(**truth).vertices
    extent = float((verts.amax(1) - verts.amin(1)).norm(dim=-1).max())
    rig = ring_cameras(views, target=np.zeros(3), up=np.array([0.0, 0.0, 1.0]),
                       distance=1.2 * extent, elevations_deg=[70, 40, 40, 30][:views],
                       azimuths_deg=[0, 90, 210, 320][:views], focal=float(size),
                       image_size=(size, size))
    cams = {k: torch.as_tensor(rig[k], dtype=torch.float32).expand(frames, *rig[k].shape)
            for k in ('K', 'R', 't')}
    renderer = SoftSilhouetteRenderer(sigma=sigma)

    def render(params):
        with torch.no_grad():
            v = model(**params).vertices
            return renderer(v, model.faces, dict(cams, dist=None, height=size, width=size))

    masks = (render(truth) > 0.5).float()
    init = dict(global_orient=truth['global_orient'] + 0.1 * torch.randn(frames, 3, generator=g),
                body_pose=truth['body_pose'] + 0.1 * torch.randn(frames, J - 1, 3, generator=g),
                transl=0.02 * extent * torch.randn(frames, 3, generator=g))
    handlers = [dict(type='SilhouetteHandler', name='sil',
                     renderer=dict(type='SoftSilhouetteRenderer', sigma=sigma),
                     loss=dict(type='SilhouetteLoss', mode='iou'))]
    stages = [dict(name='pose', fit=['global_orient', 'transl', 'body_pose'], n_iter=n_iter,
                   optimizer=dict(type='Adam', lr=0.02), ftol=0.0)]
    # return_vertices=True: the registrant's final evaluation needs vertices for the
    # silhouette handler (see the report on SMILRegistrant._result).
    reg = SMILRegistrant(body_model=model, handlers=handlers, stages=stages, init='zeros',
                         return_vertices=True)
    reg.setup(dict(keypoint_names=model.joint_names))
    obs = dict(masks=masks, view_valid=torch.ones(frames, views, dtype=torch.bool), **cams)

    def iou(params):
        pred = render(params) > 0.5
        gt = masks > 0.5
        return (pred & gt).sum((-1, -2)).float() / (pred | gt).sum((-1, -2)).float()

    start = iou(init)
    result = reg.fit(obs, init_params=init)
    return start, iou({k: result.params[k] for k in init})


def test_stick_silhouette_fit_reaches_iou_095():
    start, end = silhouette_fit(frames=1, views=3, size=64, n_iter=40)
    assert float(start.max()) < 0.85  # the perturbation is visible
    assert float(end.min()) >= 0.95, end


@pytest.mark.slow
def test_stick_silhouette_fit_full():
    start, end = silhouette_fit(frames=2, views=4, size=128, n_iter=80, sigma=2.0)
    assert float(start.max()) < 0.85
    assert float(end.min()) >= 0.95, end
