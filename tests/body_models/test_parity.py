"""Numerical parity with the reference implementation (SMILify) on ../shared fixtures."""
import numpy as np
import pytest
import torch

from smilfit.body_models import SMILModel
from tests.conftest import shared_path

MODELS = {'stick': 'SMILy_STICK.pkl', 'mouse': 'SMILy_Mouse_static_joints.pkl'}
CASES = [(animal, mode) for animal in MODELS for mode in ('plain', 'scaled', 'scaledprop')]


def fixture_inputs(z, dtype=torch.float32):
    t = lambda k: torch.as_tensor(z[k], dtype=dtype)  # noqa: E731
    kwargs = dict(global_orient=t('param_global_rot'), body_pose=t('param_joint_rot'),
                  betas=t('param_betas'), transl=t('param_trans'))
    if 'param_log_beta_scales' in z.files:
        kwargs.update(log_scale=t('param_log_beta_scales'), bone_trans=t('param_betas_trans'),
                      propagate_scaling=bool(z['param_propagate_scaling']))
    return kwargs


@pytest.fixture(scope='module')
def models():
    cache = {}

    def get(animal, **kwargs):
        key = (animal, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = SMILModel(model_path=str(shared_path('models', MODELS[animal])),
                                   **kwargs)
        return cache[key]
    return get


@pytest.mark.parametrize('animal,mode', CASES)
def test_reference_parity_float32(models, animal, mode):
    z = np.load(shared_path('fixtures', 'smilify_parity', f'{animal}_{mode}.npz'))
    model = models(animal, reference_compat=True)
    np.testing.assert_array_equal(model.parents.numpy(), z['expect_parents'])
    out = model(**fixture_inputs(z), return_v_shaped=True)
    for got, key in ((out.vertices, 'expect_vertices'), (out.joints, 'expect_joints'),
                     (out.joints_kin, 'expect_joints_kin'), (out.v_shaped, 'expect_v_shaped'),
                     (out.rot_mats, 'expect_Rs')):
        np.testing.assert_allclose(got.detach().numpy(), z[key], atol=1e-4, rtol=0,
                                   err_msg=f'{animal}/{mode}: {key}')
    # The vertex-free fast path gives the same joints.
    fast = model(**fixture_inputs(z), return_vertices=False)
    assert fast.vertices is None
    np.testing.assert_allclose(fast.joints.numpy(), z['expect_joints'], atol=1e-4, rtol=0)


@pytest.mark.parametrize('animal', list(MODELS))
def test_plain_mode_needs_no_compat(models, animal):
    """Without scales the corrected default model is the reference."""
    z = np.load(shared_path('fixtures', 'smilify_parity', f'{animal}_plain.npz'))
    out = models(animal)(**fixture_inputs(z))
    np.testing.assert_allclose(out.vertices.detach().numpy(), z['expect_vertices'], atol=1e-4)


@pytest.mark.parametrize('animal,mode', [c for c in CASES if c[1] != 'plain'])
def test_default_mode_differs_only_in_documented_defects(models, animal, mode):
    """The corrected model equals the reference once its two defects are undone in the inputs:
    a zero root scale (the reference ignores it) and a y-negated bone translation."""
    z = np.load(shared_path('fixtures', 'smilify_parity', f'{animal}_{mode}.npz'))
    kwargs = fixture_inputs(z)
    model = models(animal)
    root = int(np.flatnonzero(z['expect_parents'] < 0)[0])
    assert not torch.allclose(model(**kwargs).vertices, torch.as_tensor(z['expect_vertices']),
                              atol=1e-3), 'fixtures should exercise the defects'
    if not kwargs['propagate_scaling']:
        # Non-propagating reference: children of the root still receive S_root^-1, so only
        # a zero root scale makes the two agree.
        kwargs['log_scale'] = kwargs['log_scale'].clone()
        kwargs['log_scale'][:, root] = 0
        ref = SMILModel(model_path=str(shared_path('models', MODELS[animal])),
                        reference_compat=True)(**kwargs).vertices
    else:
        ref = None
    kwargs_fixed = dict(kwargs)
    kwargs_fixed['bone_trans'] = kwargs['bone_trans'] * torch.tensor([1.0, -1.0, 1.0])
    if kwargs['propagate_scaling']:
        # Propagating reference == correct model with the root scale removed.
        kwargs_fixed['log_scale'] = kwargs['log_scale'].clone()
        kwargs_fixed['log_scale'][:, root] = 0
        ref = torch.as_tensor(z['expect_vertices'])
    ours = model(**kwargs_fixed).vertices
    np.testing.assert_allclose(ours.detach().numpy(), ref.detach().numpy(), atol=1e-4)


def test_float64_matches_float32(models):
    z = np.load(shared_path('fixtures', 'smilify_parity', 'stick_scaled.npz'))
    m64 = models('stick', reference_compat=True, dtype=torch.float64)
    assert m64.v_template.dtype == torch.float64
    out = m64(**fixture_inputs(z, torch.float64))
    assert out.vertices.dtype == torch.float64
    np.testing.assert_allclose(out.vertices.numpy(), z['expect_vertices'], atol=1e-4)
