"""Fitting on CUDA: batched Levenberg-Marquardt and L-BFGS registrants against the CPU."""
import pytest
import torch

from smilfit.body_models import SMILModel, demo_model_data
from smilfit.cameras import projection_matrices, triangulate_dlt
from smilfit.registrants.initialization import rigid_align
from tests.registrants.solver.test_levenberg_marquardt import _problem

pytestmark = pytest.mark.gpu

HANDLERS = [dict(type='Keypoint2DHandler', name='kp2d', source='joints'),
            dict(type='ShapePriorHandler', name='shape', weight=1e-4),
            dict(type='PosePriorHandler', name='pose', weight=1e-4,
                 loss=dict(type='PoseL2Prior'))]


def _fit(device, optimizer, dtype, obs):
    from smilfit.registrants import SMILRegistrant
    model = SMILModel(data=demo_model_data(), dtype=dtype).to(device)
    fit = ['global_orient', 'transl', 'body_pose', 'betas']
    if optimizer == 'lm':
        stages = [dict(name='lm', fit=fit, n_iter=20, ftol=1e-12, gtol=1e-10,
                       optimizer=dict(type='LevenbergMarquardt'))]
    else:
        stages = [dict(name='rigid', fit=['global_orient', 'transl'], n_iter=2,
                       optimizer=dict(type='LBFGS', max_iter=30)),
                  dict(name='full', fit=fit, n_iter=10, optimizer=dict(type='LBFGS', max_iter=50))]
    reg = SMILRegistrant(body_model=model, handlers=HANDLERS, stages=stages)
    reg.setup(dict(keypoint_names=model.joint_names))
    return reg.fit(obs)


@pytest.mark.parametrize('optimizer', ['lm', 'lbfgs'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_cuda_fit_matches_cpu_fit(optimizer, dtype):
    truth_model = SMILModel(data=demo_model_data(), dtype=torch.float64)
    obs, truth, length = _problem(truth_model, 6, noise=1.0, missing=0.2, seed=4)
    cpu = _fit('cpu', optimizer, dtype, obs)
    gpu = _fit('cuda', optimizer, dtype, obs)  # observations stay on the CPU: moved by fit
    assert gpu.output.joints.device.type == 'cuda'
    for name, value in gpu.params.items():
        assert value.device.type == 'cuda', name
    err_c = (cpu.output.joints.double() - truth).norm(dim=-1).mean() / length
    err_g = (gpu.output.joints.double().cpu() - truth).norm(dim=-1).mean() / length
    assert float(err_g) < 0.01, float(err_g)  # within 1 % of the body length
    # The same optimum: CUDA reductions round differently, so allow a small gap. LM
    # converges (float64: the same result to 1e-6 of the body length); L-BFGS's line
    # searches stop short of convergence and amplify rounding (measured on an H100:
    # 3e-4 of the body length in float64).
    assert abs(float(err_g) - float(err_c)) < 1e-3, (float(err_g), float(err_c))
    gap = (gpu.output.joints.double().cpu() - cpu.output.joints.double()).norm(dim=-1).max()
    bound = 1e-6 if (dtype == torch.float64 and optimizer == 'lm') else 5e-3
    assert float(gap / length) < bound, float(gap / length)


def test_triangulation_and_initialisation_memory_is_bounded():
    """cuSOLVER's batched eigh/svd workspace is per matrix (29 GB for 55,000 4 x 4
    matrices on an H100): smilfit.ops.linalg chunks them, so 432,000 points triangulate
    in little memory, with the CPU's result."""
    model = SMILModel(data=demo_model_data(), dtype=torch.float64)
    obs, truth, _ = _problem(model, 16, noise=1.0, seed=5)
    uv = obs['keypoints_2d'].repeat(1000, 1, 1, 1)  # 16,000 frames x 27 points
    P = projection_matrices(obs['R'][0], obs['t'][0], obs['K'][0])
    cpu = triangulate_dlt(uv[:32], P)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    gpu = triangulate_dlt(uv.cuda(), P.cuda())
    peak_gb = (torch.cuda.max_memory_allocated() - base) / 2 ** 30
    assert peak_gb < 4.0, peak_gb
    torch.testing.assert_close(gpu[:32].cpu(), cpu)
    R, t = rigid_align(truth.repeat(1000, 1, 1).cuda(), gpu)[:2]
    assert R.shape == (16000, 3, 3) and torch.isfinite(R).all()
