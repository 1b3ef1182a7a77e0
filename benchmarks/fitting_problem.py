"""The synthetic fitting problem the fitting benchmarks share: a SMIL model's joints in 4
ring cameras, with optional pixel noise and missing points, and the registrant that fits
them (one batched per-sample Levenberg-Marquardt stage, or L-BFGS)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import SHARED  # noqa: E402  (benchmarks/shared_data.py)

from smilfit.body_models import SMILModel, demo_model_data, load_model_data  # noqa: E402
from smilfit.cameras import project_points  # noqa: E402
from smilfit.datasets.synthetic import ring_cameras  # noqa: E402
from smilfit.registrants import SMILRegistrant  # noqa: E402

SHARED_MODELS = SHARED / 'models'


def load_model(name: str, dtype: torch.dtype = torch.float64) -> SMILModel:
    if name == 'demo':
        return SMILModel(data=demo_model_data(), dtype=dtype)
    files = dict(stick='SMILy_STICK.pkl', mouse='SMILy_Mouse_static_joints.pkl')
    path = SHARED_MODELS / files[name]
    if not path.exists():
        raise SystemExit(f'{path} not found: use --model demo')
    return SMILModel(data=load_model_data(path), dtype=dtype)


def make_problem(model: SMILModel, frames: int, noise_px: float, missing: float, seed: int):
    """Observations (on the model's device), true joints (B, J, 3) and the body length."""
    g = torch.Generator().manual_seed(seed)
    J, K = model.num_joints, model.num_betas
    cov = model.data.shape_cov if model.data.shape_cov is not None else np.eye(K)
    chol = torch.linalg.cholesky(torch.as_tensor(cov, dtype=torch.float64))
    truth = dict(global_orient=0.3 * torch.randn(frames, 3, generator=g, dtype=torch.float64),
                 body_pose=0.3 * torch.randn(frames, J - 1, 3, generator=g, dtype=torch.float64),
                 betas=torch.randn(frames, K, generator=g, dtype=torch.float64) @ chol.T)
    truth = {k: v.to(model.device) for k, v in truth.items()}
    joints = model(**truth, return_vertices=False).joints
    rest = model().joints_kin[0]
    length = float((rest.max(0).values - rest.min(0).values).norm())
    cams = ring_cameras(4, target=np.zeros(3), up=np.array([0.0, 0.0, 1.0]),
                        distance=3.0 * length, elevations_deg=[35, 45, 40, 50],
                        azimuths_deg=[0, 90, 180, 270], focal=1000.0, image_size=(1024, 1024))
    K_, R_, t_ = (torch.as_tensor(cams[k], device=model.device) for k in ('K', 'R', 't'))
    uv = project_points(joints[:, None], K_, R_, t_)
    uv = uv + noise_px * torch.randn(uv.shape, generator=g, dtype=torch.float64).to(uv.device)
    drop = torch.rand(uv.shape[:3], generator=g, dtype=torch.float64).to(uv.device) < missing
    uv = torch.where(drop[..., None], torch.full_like(uv, float('nan')), uv)
    obs = dict(keypoints_2d=uv, confidence=(~drop).to(torch.float64),
               view_valid=torch.ones(frames, 4, dtype=torch.bool, device=uv.device),
               K=K_.expand(frames, -1, -1, -1), R=R_.expand(frames, -1, -1, -1),
               t=t_.expand(frames, -1, -1))
    return obs, joints, length


def registrant(model: SMILModel, iterations: int, optimizer: str = 'lm',
               linear_dtype: str = 'float32') -> SMILRegistrant:
    """The benchmark's registrant: 2D keypoints in 4 views plus the model's shape prior.

    ``'lm'``: one batched per-sample Levenberg-Marquardt stage of ``iterations``
    iterations (closed-form Jacobians). ``'lbfgs'``: a rigid stage then ``iterations``
    x 50 per-sample L-BFGS iterations.
    """
    handlers, stages = registrant_config(iterations, optimizer, linear_dtype)
    reg = SMILRegistrant(body_model=model, handlers=handlers, stages=stages)
    reg.setup(dict(keypoint_names=model.joint_names))
    return reg


def registrant_config(iterations: int, optimizer: str = 'lm', linear_dtype: str = 'float32'):
    """The handlers and stages of :func:`registrant` (plain dicts)."""
    handlers = [dict(type='Keypoint2DHandler', name='kp2d', source='joints',
                     loss=dict(type='KeypointMSELoss')),
                dict(type='ShapePriorHandler', name='shape_prior', weight=1e-2,
                     loss=dict(type='ShapePriorLoss'))]
    fit = ['global_orient', 'transl', 'body_pose', 'betas']
    if optimizer == 'lm':
        stages = [dict(name='full', fit=fit, n_iter=iterations, ftol=1e-10, gtol=1e-9,
                       optimizer=dict(type='LevenbergMarquardt', linear_dtype=linear_dtype))]
    else:
        stages = [dict(name='rigid', fit=['global_orient', 'transl'], n_iter=2,
                       optimizer=dict(type='LBFGS', max_iter=30)),
                  dict(name='full', fit=fit, n_iter=iterations,
                       optimizer=dict(type='LBFGS', max_iter=50))]
    return handlers, stages


def joint_error(pred: torch.Tensor, truth: torch.Tensor, length: float) -> float:
    err = (pred.to(truth) - truth).norm(dim=-1)
    return float(100 * torch.nanmean(err) / length)


def fit_in_chunks(reg: SMILRegistrant, obs, chunk_size: int) -> torch.Tensor:
    """Fitted joints (B, J, 3) of every frame, fitting ``chunk_size`` frames at a time."""
    frames = obs['keypoints_2d'].shape[0]
    return torch.cat([reg.fit({k: v[i:i + chunk_size] for k, v in obs.items()}).output.joints
                      for i in range(0, frames, chunk_size)])
