"""A small posed toy model, two cameras and synthetic observations for handler tests."""
import math

import torch

from smilfit.body_models import SMILModel
from smilfit.cameras import project_points
from tests.body_models.toy_models import toy_model_data

DT = torch.float64

#: Model keypoints of the toy model (joints and one vertex).
MODEL_KEYPOINTS = {'head': {'joint': 'j1'}, 'neck': {'joint': 'j2'}, 'hip': {'joint': 'j3'},
                   'paw': {'joint': 'j5'}, 'tip': {'vertex': 7}}
#: Data keypoints: other names, another order, one the model lacks.
DATA_NAMES = ['D_tip', 'D_head', 'D_unused', 'D_neck', 'D_paw', 'D_hip']
LOOKUP = {'head': 'D_head', 'neck': 'D_neck', 'hip': 'D_hip', 'paw': 'D_paw', 'tip': 'D_tip'}
DATA_INFO = dict(keypoint_names=DATA_NAMES, joint_lookup=LOOKUP)


def toy_model(**kw) -> SMILModel:
    data = toy_model_data(num_joints=6, num_vertices=40, num_betas=3, seed=3)
    return SMILModel(data=data, keypoints=MODEL_KEYPOINTS, dtype=DT, **kw)


def rot_y(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=DT)


def two_cameras():
    """(C=2, ...) K, R, t, dist: one front camera, one from the side (with distortion)."""
    K = torch.tensor([[500.0, 0.0, 320.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]], dtype=DT)
    K = torch.stack([K, K * torch.tensor([[1.1], [1.1], [1.0]], dtype=DT)])
    R = torch.stack([torch.eye(3, dtype=DT), rot_y(90.0)])
    t = torch.tensor([[0.0, 0.0, 15.0], [0.5, -0.2, 15.0]], dtype=DT)
    dist = torch.tensor([[0.0] * 5, [-0.05, 0.01, 1e-3, -1e-3, 0.0]], dtype=DT)
    return K, R, t, dist


def random_params(model: SMILModel, B: int, seed: int = 0, scale: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    J = model.num_joints
    return dict(global_orient=scale * torch.randn(B, 3, generator=g, dtype=DT),
                body_pose=scale * torch.randn(B, J - 1, 3, generator=g, dtype=DT),
                betas=torch.randn(B, model.num_betas, generator=g, dtype=DT),
                transl=0.2 * torch.randn(B, 3, generator=g, dtype=DT))


def forward(model, params):
    keys = ('global_orient', 'body_pose', 'betas', 'transl', 'log_scale', 'bone_trans')
    return model(**{k: params[k] for k in keys if k in params}, return_vertices=False)


def observe(model, params, batched_cameras: bool = True):
    """Observations of the true model keypoints in two views, data names/order."""
    out = forward(model, params)
    B = out.joints.shape[0]
    K, R, t, dist = two_cameras()
    kp = project_points(out.keypoints[:, None], K, R, t, dist)        # (B, C, Kp, 2)
    C = kp.shape[1]
    obs2d = torch.full((B, C, len(DATA_NAMES), 2), float('nan'), dtype=DT)
    obs3d = torch.full((B, len(DATA_NAMES), 3), float('nan'), dtype=DT)
    for i, name in enumerate(model.keypoint_names):
        j = DATA_NAMES.index(LOOKUP[name])
        obs2d[:, :, j] = kp[:, :, i]
        obs3d[:, j] = out.keypoints[:, i]
    finite = torch.isfinite(obs2d).all(-1)
    cams = dict(K=K, R=R, t=t, dist=dist)
    if batched_cameras:
        cams = {k: v.expand((B,) + v.shape).clone() for k, v in cams.items()}
    return dict(keypoints_2d=obs2d.detach(), confidence=finite.to(DT),
                visible=finite, view_valid=torch.ones(B, C, dtype=torch.bool),
                keypoints_3d=obs3d.detach(), **cams)
