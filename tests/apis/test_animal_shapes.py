"""One shape per animal: two animals of the same model whose shape coefficients differ
(bone lengths 5 % of the body length apart), seen by two cameras, get their own shapes
back from 10 frames and from 200, by the joint pose-and-shape Levenberg-Marquardt of
``configs/fitting/animal_shapes.py``; on a model whose joints follow its shape (the demo
mouse) and on a static-joint model whose shape moves its joints with the skin (the SMIL
mouse with ``static_joints_follow_shape=True``)."""
import h5py
import numpy as np
import pytest
import torch
from mmengine.config import Config

from smilfit.apis.fitting import fit_dataset
from smilfit.datasets.synthetic import build_body_model
from smilfit.datasets.synthetic_animals import (body_length, bone_lengths,
                                                generate_animal_session)

from ..conftest import REPO_ROOT, SHARED

MOUSE = SHARED / 'models' / 'SMILy_Mouse_static_joints.pkl'
MODELS = {
    'demo_mouse': dict(type='DemoSMILModel'),
    'smil_mouse_static_joints': dict(type='SMILModel', model_path=str(MOUSE),
                                     static_joints_follow_shape=True),
}


def _shape_directions(model):
    """Right singular vectors (rows) of the rest keypoints' Jacobian w.r.t. the shape
    coefficients, and how far a unit step along each moves the keypoints (L2 over all of
    them, in body lengths): what the keypoints can tell about the shape."""
    K = model.num_betas
    jac = torch.autograd.functional.jacobian(
        lambda b: model(betas=b[None], return_vertices=False).keypoints[0],
        torch.zeros(K, dtype=model.dtype)).reshape(-1, K).numpy()
    length = body_length(model)
    _, sv, vt = np.linalg.svd(jac)
    return vt, sv / length, length


@pytest.fixture(scope='module', params=list(MODELS))
def shapes(request, tmp_path_factory):
    spec = MODELS[request.param]
    if 'model_path' in spec and not MOUSE.is_file():
        pytest.skip(f'{MOUSE} is not available')
    model = build_body_model(spec)
    directions, moves, length = _shape_directions(model)
    # Two animals mirrored about the mean shape along the directions the keypoints see,
    # scaled so that their bone lengths differ by 5 % of the body length.
    beta = np.random.default_rng(0).standard_normal(int((moves >= 0.02).sum())) \
        @ directions[moves >= 0.02]
    gap = float((bone_lengths(model, betas=beta) - bone_lengths(model, betas=-beta)).abs().max())
    beta = beta * 0.05 * length / gap
    truth = np.stack([beta, -beta])
    tmp = tmp_path_factory.mktemp(request.param)
    torch.set_num_threads(1)
    fitted = {}
    for frames in (10, 200):
        data = tmp / f'{frames}.h5'
        generate_animal_session(data, body_model=spec, num_animals=2, frames=frames,
                                num_views=2, bone_std=0.0, betas=truth, noise_px=0.5,
                                seed=frames)
        cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'fitting' / 'animal_shapes.py'))
        cfg.body_model = spec
        cfg.data = dict(cfg.data, path=str(data), skeleton_frames=frames)
        result = fit_dataset(cfg, tmp / f'fit{frames}', progress=False)
        with h5py.File(result) as f:
            fitted[frames] = (f['animals/param_betas'][:],
                              float(np.nanmedian(f['metrics/reprojection_px'][:])))
    return dict(model=model, truth=truth, fitted=fitted, directions=directions,
                moves=moves, length=length)


@pytest.mark.parametrize('frames', [10, 200])
def test_each_animal_gets_its_own_bone_lengths(shapes, frames):
    """Within 1 % of the body length of its own truth (they are 5 % apart)."""
    model, truth, length = shapes['model'], shapes['truth'], shapes['length']
    betas, reprojection = shapes['fitted'][frames]
    assert reprojection < 1.0                     # pixels; the labels' noise is 0.5 px
    for a in range(2):
        error = float((bone_lengths(model, betas=betas[a])
                       - bone_lengths(model, betas=truth[a])).abs().max()) / length
        assert error < 0.01, (a, error)


@pytest.mark.parametrize('frames, moving', [(10, 0.05), (200, 0.02)])
def test_shape_coefficients_within_a_tenth(shapes, frames, moving):
    """Along every shape direction whose unit coefficient moves the keypoints by at least
    ``moving`` body lengths (5 % from 10 frames, 2 % from 200; a direction that barely
    moves them is set by the label noise and the prior, not the data), each animal's
    coefficient within 0.1 of its truth."""
    betas, _ = shapes['fitted'][frames]
    seen = shapes['directions'][shapes['moves'] >= moving]
    assert len(seen)
    for a in range(2):
        error = np.abs(seen @ (betas[a] - shapes['truth'][a]))
        assert error.max() < 0.1, (a, error)
