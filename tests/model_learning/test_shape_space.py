"""Shape-space learning: inverse LBS and the synthetic round trip on the stick insect.

Thresholds (stick insect, body length about 1.8 model units):
- rest-pose or posed-and-unposed meshes from random betas: all principal angles between
  the learned and the true shapedirs subspaces below 1e-6 rad; training meshes
  reproduced to 1e-9;
- with per-vertex noise of std 1e-3 (isotropic, about 0.05 % of the body length) on
  30 training registrations: largest angle below 0.15 rad (measured 0.094; the noise
  norm over 9060 coordinates is ~0.1, against ~0.27 along the weakest direction);
- held-out registrations: projection error below 1 % of the template-alone error
  (noise-free), and below the template-alone error with noise;
- per-joint scale and translation (entangled / separate): the learned model re-poses
  the training registrations to a mean per-vertex error below 1e-3 (max below 1e-2).
"""
import numpy as np
import pytest
import torch

from smilfit.body_models import SMILModel, demo_model_data, load_model_data
from smilfit.body_models.io import save_model_data
from smilfit.model_learning import (ShapeSpaceLearner, learn_shape_space, principal_angles,
                                    unpose_registrations)

DT = torch.float64


@pytest.fixture(scope='module')
def stick(request):
    from tests.conftest import shared_path
    data = load_model_data(shared_path('models', 'SMILy_STICK.pkl'))
    return data, SMILModel(data=data, dtype=DT)


def random_params(model, N, seed, pose=0.3, scale=False):
    g = torch.Generator().manual_seed(seed)
    K = model.num_betas
    L = torch.linalg.cholesky(torch.as_tensor(model.data.shape_cov, dtype=DT))
    p = dict(global_orient=0.5 * torch.randn(N, 3, generator=g, dtype=DT),
             body_pose=pose * torch.randn(N, model.num_joints - 1, 3, generator=g, dtype=DT),
             betas=torch.randn(N, K, generator=g, dtype=DT) @ L.T,
             transl=torch.randn(N, 3, generator=g, dtype=DT))
    if scale:
        p['log_scale'] = 0.05 + 0.08 * torch.randn(N, model.num_joints, 3, generator=g,
                                                   dtype=DT)
        p['bone_trans'] = 0.01 * torch.randn(N, model.num_joints, 3, generator=g, dtype=DT)
    return p


def angles(space, data):
    return principal_angles(space.data.shapedirs.reshape(-1, space.num_components),
                            data.shapedirs.reshape(-1, data.num_betas))


def test_unpose_is_exact_inverse_of_lbs():
    model = SMILModel(data=demo_model_data(), dtype=DT)
    p = random_params(model, 3, 0, scale=True)
    out = model(**p, return_v_shaped=True)
    rest, joints = unpose_registrations(model, out.vertices, p)
    assert (rest - out.v_shaped).abs().max() < 1e-10
    expect = model.rest_joints + torch.einsum('jck,bk->bjc', model.rest_joint_dirs, p['betas'])
    torch.testing.assert_close(joints, expect)
    with pytest.raises(ValueError, match='unknown pose parameter'):
        unpose_registrations(model, out.vertices, dict(p, pose=p['body_pose']))


def test_rest_pose_round_trip_recovers_shapedirs(stick):
    data, model = stick
    p = random_params(model, 30, 1)
    rest = model(betas=p['betas'], return_v_shaped=True).v_shaped
    space = learn_shape_space(data, rest.numpy())
    assert space.num_components == data.num_betas  # rank 5: 99 % needs all five
    ang = angles(space, data)
    print(f'rest-pose principal angles (rad): {ang}')
    assert ang.max() < 1e-6
    assert space.report['train']['max'] < 1e-9
    np.testing.assert_allclose(space.data.shape_cov, np.eye(5), atol=1e-9)  # 'std' scaling


def test_posed_round_trip_with_unposing_and_holdout(stick):
    data, model = stick
    p = random_params(model, 40, 2)
    posed = model(**p).vertices
    rest, joints = unpose_registrations(model, posed, p)
    train, hold = slice(0, 30), slice(30, 40)
    learner = ShapeSpaceLearner(data)
    space = learner.fit(rest[train].numpy(), joints[train].numpy())
    ang = angles(space, data)
    print(f'posed/unposed principal angles (rad): {ang}')
    assert ang.max() < 1e-6
    held = learner.errors(learner.prepare(rest[hold].numpy(), joints[hold].numpy()))
    print(f'held-out per-vertex error {held}')
    assert held['mean'] < 0.01 * held['template_mean']
    # the learned model, re-posed with the fitted pose, reproduces the registrations
    learned = SMILModel(data=space.data, dtype=DT)
    b = torch.as_tensor(space.coefficients)
    again = learned(**dict(p, betas=b) | {k: v[train] for k, v in p.items() if k != 'betas'})
    assert (again.vertices - posed[train]).norm(dim=-1).max() < 1e-6


def test_noisy_registrations(stick):
    data, model = stick
    N = 40
    p = random_params(model, N, 3)
    posed = model(**p).vertices
    g = torch.Generator().manual_seed(9)
    noisy = posed + 1e-3 * torch.randn(posed.shape, generator=g, dtype=DT)
    rest, joints = unpose_registrations(model, noisy, p)
    learner = ShapeSpaceLearner(data, num_components=5)
    space = learner.fit(rest[:30].numpy(), joints[:30].numpy())
    ang = angles(space, data)
    print(f'noisy principal angles (rad): {ang}')
    assert ang.max() < 0.15 and ang.min() < 0.05
    held = learner.errors(learner.prepare(rest[30:].numpy(), joints[30:].numpy()))
    train = space.report['train']
    print(f'noisy train {train}, held-out {held}')
    assert held['mean'] < 0.25 * held['template_mean']
    assert train['mean'] < 2e-3  # the noise itself is ~1.6e-3 per vertex (sqrt(3) sigma)


@pytest.mark.parametrize('mode', ['entangled', 'separate'])
def test_scale_and_translation_modes(stick, mode, tmp_path):
    data, model = stick
    p = random_params(model, 24, 4, scale=True)
    posed = model(**p).vertices
    rest, joints = unpose_registrations(model, posed, p)
    learner = ShapeSpaceLearner(data, scale_mode=mode, explained_variance=0.9999)
    space = learner.fit(rest.numpy(), joints.numpy(), p['log_scale'].numpy(),
                        p['bone_trans'].numpy())
    assert space.data.scaledirs is not None and space.data.transdirs is not None
    if mode == 'entangled':
        assert space.data.scaledirs.shape[0] == space.num_components
    inputs = {k: torch.as_tensor(v) for k, v in learner.model_inputs(space.samples).items()}
    path = tmp_path / f'learned_{mode}.json'
    save_model_data(space.data, path)  # writes and loads back through smilfit's format
    learned = SMILModel(model_path=str(path), dtype=DT)
    again = learned(global_orient=p['global_orient'], body_pose=p['body_pose'],
                    transl=p['transl'], **inputs)
    err = (again.vertices - posed).norm(dim=-1)
    print(f'{mode}: {space.num_components} components, re-posed error mean '
          f'{float(err.mean()):.2e} max {float(err.max()):.2e}')
    assert err.mean() < 1e-3 and err.max() < 1e-2
    kin = (again.joints_kin - model(**p).joints_kin).norm(dim=-1)
    assert kin.max() < 1e-2


def test_pickle_output_and_errors(tmp_path):
    data = demo_model_data()
    rng = np.random.default_rng(0)
    rest = data.v_template[None] + np.einsum('vck,nk->nvc', data.shapedirs,
                                             rng.normal(size=(6, data.num_betas)))
    space = learn_shape_space(data, rest, normalize='unit', num_components=3)
    np.testing.assert_allclose(np.linalg.norm(space.data.shapedirs.reshape(-1, 3), axis=0),
                               1.0)
    save_model_data(space.data, tmp_path / 'm.pkl')
    assert SMILModel(model_path=str(tmp_path / 'm.pkl')).num_betas == 3
    with pytest.raises(ValueError, match='at least 2'):
        learn_shape_space(data, rest[:1])
    with pytest.raises(ValueError, match='rest_vertices'):
        learn_shape_space(data, rest[:, :10])
    learner = ShapeSpaceLearner(data)
    learner.fit(rest)
    with pytest.raises(ValueError, match='for none'):
        learner.prepare(rest, log_scale=np.zeros((6, data.num_joints, 3)))
