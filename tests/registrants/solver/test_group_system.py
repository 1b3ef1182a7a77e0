"""Group Levenberg-Marquardt: per-frame and shared (per-animal) parameters, Schur solve."""
import numpy as np
import pytest
import torch

from smilfit.body_models import SMILModel, demo_model_data
from smilfit.cameras import project_points
from smilfit.datasets.synthetic import ring_cameras
from smilfit.body_models.keypoint_naming import rotate_offsets, source_carriers
from smilfit.registrants import SMILRegistrant
from smilfit.registrants.solver.linear_solver import BlockArrow, SchurComplement

POSE = ['global_orient', 'transl', 'body_pose']
SKELETON = ['bone_trans', 'keypoint_offsets']


@pytest.fixture(scope='module')
def model():
    return SMILModel(data=demo_model_data(), dtype=torch.float64)


def _length(model):
    rest = model().joints_kin[0]
    return float((rest.max(0).values - rest.min(0).values).norm())


def _data(model, groups, seed=0, noise=1.0):
    """Observations of frames whose animals (``groups``) each have their own skeleton
    (bone translations, joint-frame keypoint offsets), the truth and noisy starts."""
    g = torch.Generator().manual_seed(seed)
    B, G = groups.numel(), int(groups.max()) + 1
    J, N = model.num_joints, len(model.keypoint_names)
    L = _length(model)
    pose = dict(global_orient=0.3 * torch.randn(B, 3, generator=g, dtype=torch.float64),
                transl=0.05 * L * torch.randn(B, 3, generator=g, dtype=torch.float64),
                body_pose=0.3 * torch.randn(B, J - 1, 3, generator=g, dtype=torch.float64))
    skeleton = dict(bone_trans=0.03 * L * torch.randn(G, J, 3, generator=g, dtype=torch.float64),
                    keypoint_offsets=0.03 * L * torch.randn(G, N, 3, generator=g,
                                                            dtype=torch.float64))
    out = model(bone_trans=skeleton['bone_trans'][groups], return_vertices=False, **pose)
    points = out.keypoints + rotate_offsets(skeleton['keypoint_offsets'][groups],
                                            out.joint_transforms,
                                            source_carriers(model, 'keypoints'))
    cams = ring_cameras(4, target=np.zeros(3), up=np.array([0.0, 0.0, 1.0]),
                        distance=3.0 * L, elevations_deg=[35, 45, 40, 50],
                        azimuths_deg=[0, 90, 180, 270], focal=1000.0, image_size=(1024, 1024))
    K, R, t = (torch.as_tensor(cams[k]) for k in ('K', 'R', 't'))
    uv = project_points(points[:, None], K, R, t)
    uv = uv + noise * torch.randn(uv.shape, generator=g, dtype=torch.float64)
    obs = dict(keypoints_2d=uv, confidence=torch.ones(uv.shape[:3], dtype=torch.float64),
               view_valid=torch.ones(B, 4, dtype=torch.bool), K=K.expand(B, -1, -1, -1),
               R=R.expand(B, -1, -1, -1), t=t.expand(B, -1, -1))
    start = {k: v + 0.05 * torch.randn(v.shape, generator=g, dtype=torch.float64)
             for k, v in pose.items()}
    start['transl'] = pose['transl']
    return obs, dict(pose, **skeleton), start


def _registrant(model, fit, optimizer, robust=False, n_iter=60, rounds=1, shared=SKELETON,
                prior=True, **stage):
    loss = (dict(type='KeypointMSELoss', robust='gmof', sigma=3.0) if robust
            else dict(type='KeypointMSELoss'))
    handlers = [dict(type='Keypoint2DHandler', name='kp2d', offsets_frame='joint', loss=loss,
                     scale_from_residuals=robust),
                dict(type='PosePriorHandler', name='pose_prior', weight=1e-3)]
    if prior:
        handlers.append(dict(type='SkeletonPriorHandler', name='skeleton_prior'))
    reg = SMILRegistrant(body_model=model, init='zeros', shared={k: True for k in shared},
                         handlers=handlers, stages=[
                             dict(name='s', fit=list(fit), n_iter=n_iter, rounds=rounds,
                                  optimizer=optimizer, ftol=1e-14, gtol=1e-12, **stage)])
    reg.setup(dict(keypoint_names=model.keypoint_names))
    return reg


LM = dict(type='LevenbergMarquardt')
LBFGS = dict(type='LBFGS', max_iter=200, line_search_fn='strong_wolfe',
             tolerance_grad=1e-14, tolerance_change=1e-16, history_size=50)


@pytest.mark.parametrize('robust', [False, True])
def test_shared_only_stage_equals_lbfgs(model, robust):
    """Skeleton only (pose fixed), robust kernel and noise units or plain: the group LM
    reaches LBFGS's minimum of the same summed loss (prior counted once per animal)."""
    groups = torch.tensor([0, 0, 0, 1, 1])
    obs, truth, start = _data(model, groups)
    init = {k: truth[k] for k in POSE}
    results = {}
    for name, opt, n_iter in (('lm', LM, 60), ('lbfgs', LBFGS, 8)):
        reg = _registrant(model, SKELETON, opt, robust=robust, n_iter=n_iter)
        results[name] = reg.fit(obs, init_params=init, groups=groups)
    lm, lb = results['lm'], results['lbfgs']
    L = _length(model)
    assert not lm.history[0]['per_sample']
    assert float(lm.total_loss.sum()) <= float(lb.total_loss.sum()) * (1 + 1e-7)
    for k in SKELETON:
        torch.testing.assert_close(lm.params[k], lb.params[k], atol=1e-4 * L, rtol=0)


def test_joint_stage_no_worse_than_lbfgs(model):
    """Pose and skeleton in one stage: the group LM's loss is at most LBFGS's (given
    far more evaluations) and its residuals are below the pixel noise."""
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    obs, truth, start = _data(model, groups, seed=1, noise=0.5)
    fit = POSE + SKELETON
    lm = _registrant(model, fit, LM, n_iter=80).fit(obs, init_params=start, groups=groups)
    lb = _registrant(model, fit, LBFGS, n_iter=4).fit(obs, init_params=start, groups=groups)
    assert float(lm.total_loss.sum()) <= float(lb.total_loss.sum()) * (1 + 1e-6)
    # noise of 0.5 px per coordinate: the fit's reprojection residuals are of that size
    per_coordinate = float(lm.losses['kp2d'].sum()) / obs['keypoints_2d'][..., 0].numel() / 2
    assert per_coordinate ** 0.5 < 0.5


def test_one_frame_per_group_equals_the_per_sample_solver(model):
    """Each frame its own group: the Schur solver on (pose, shared betas) takes the
    per-sample solver's steps (same damping), so both land on the same parameters."""
    groups = torch.arange(4)
    obs, truth, start = _data(model, groups, seed=2)
    fit = POSE + ['betas']
    handlers = dict(prior=False, n_iter=30)
    grouped = _registrant(model, fit, LM, shared=['betas'], **handlers)
    alone = _registrant(model, fit, LM, shared=[], **handlers)
    a = grouped.fit(obs, init_params=start, groups=groups)
    b = alone.fit(obs, init_params=start, groups=groups)
    assert not a.history[0]['per_sample'] and b.history[0]['per_sample']
    for k in fit:
        torch.testing.assert_close(a.params[k], b.params[k], rtol=1e-7, atol=1e-9, msg=k)
    assert a.history[0]['steps'] == b.history[0]['steps']
    # the group solve counts its groups' iterations as the per-sample solver its samples'
    assert a.history[0]['unit_steps'] == b.history[0]['unit_steps']
    assert 4 * a.history[0]['steps'] >= a.history[0]['unit_steps'] >= a.history[0]['steps']


def test_cost_is_the_stage_loss_with_priors_counted_once_per_group(model):
    """The solver's per-frame costs (priors spread over a group's frames) average to the
    registrant's stage loss (``counted_per_group``: 1 / n_group per frame), with groups
    of different sizes."""
    groups = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    obs, truth, start = _data(model, groups, seed=3)
    reg = _registrant(model, POSE + SKELETON, LM, n_iter=8)
    assert reg.counted_per_group(reg.handlers['skeleton_prior'])
    record = reg.fit(obs, init_params=start, groups=groups).history[0]
    assert record['loss_trace'][-1] == pytest.approx(record['mean_loss_end'], rel=1e-10)


#: What round-off may move an untouched animal's parameters by (relative, and absolute
#: for values near zero): batched kernels sum in an order that depends on the batch, and
#: so on the other animal's data; a few ulps per step, far below what real mixing moves.
ROUND_OFF = 1e-9


def _fits_before_and_after_changing_frames_2_on(model, groups):
    """Fits of the same frames, before and after frames 2: get 5 px more label noise."""
    obs, truth, start = _data(model, groups, seed=4)
    reg = _registrant(model, POSE + SKELETON, LM, n_iter=25)
    a = reg.fit(obs, init_params=start, groups=groups)
    changed = dict(obs)
    changed['keypoints_2d'] = obs['keypoints_2d'].clone()
    changed['keypoints_2d'][2:] += 5.0 * torch.randn(changed['keypoints_2d'][2:].shape,
                                                     generator=torch.Generator().manual_seed(9),
                                                     dtype=torch.float64)
    return a, reg.fit(changed, init_params=start, groups=groups)


def test_groups_never_mix(model):
    """Changing one animal's observations leaves the other animal's fit untouched, up to
    the arithmetic's round-off."""
    a, b = _fits_before_and_after_changing_frames_2_on(model, torch.tensor([0, 0, 1, 1, 1]))
    for k in POSE + SKELETON:
        torch.testing.assert_close(a.params[k][:2], b.params[k][:2], rtol=ROUND_OFF,
                                   atol=ROUND_OFF, msg=k)
        assert not torch.allclose(a.params[k][2:], b.params[k][2:])


def test_the_round_off_bound_catches_frames_that_share_an_animal(model):
    """The same change moves frames 0 and 1 far beyond the round-off bound when all five
    frames are one animal (one shared skeleton): what mixing between animals would do, so
    the bound above is tight enough to see it."""
    a, b = _fits_before_and_after_changing_frames_2_on(model, torch.tensor([0, 0, 0, 0, 0]))
    moved = max(float((a.params[k][:2] - b.params[k][:2]).abs().max()) for k in SKELETON)
    assert moved > 1e3 * ROUND_OFF


@pytest.mark.parametrize('Px', [0, 5])
def test_schur_solve_equals_the_dense_solve(Px):
    """The block-arrow Schur solve equals a dense solve of every group's full system."""
    g = torch.Generator().manual_seed(0)
    groups = torch.tensor([0, 1, 0, 2, 1, 0])
    n, G, Py = groups.numel(), 3, 4
    P = n * Px + G * Py
    F = torch.randn(P + 3, P, generator=g, dtype=torch.float64)
    H = F.T @ F + 0.1 * torch.eye(P, dtype=torch.float64)
    # keep only the block-arrow pattern: a frame couples to itself and its group
    xcol = [torch.arange(i * Px, (i + 1) * Px) for i in range(n)]
    ycol = [n * Px + torch.arange(k * Py, (k + 1) * Py) for k in range(G)]
    mask = torch.zeros(P, P, dtype=torch.bool)
    for i in range(n):
        k = int(groups[i])
        for a, b in ((xcol[i], xcol[i]), (xcol[i], ycol[k]), (ycol[k], xcol[i])):
            mask[a[:, None], b[None, :]] = True
    for k in range(G):
        mask[ycol[k][:, None], ycol[k][None, :]] = True
    H = torch.where(mask, H, torch.zeros_like(H))
    grad = torch.randn(P, generator=g, dtype=torch.float64)
    step = torch.linalg.solve(H, -grad)
    A = torch.stack([H[c[:, None], c[None, :]] for c in xcol])
    W = torch.stack([H[xcol[i][:, None], ycol[int(groups[i])][None, :]] for i in range(n)])
    V = torch.stack([H[c[:, None], c[None, :]] for c in ycol])
    gx = torch.stack([grad[c] for c in xcol])
    gy = torch.stack([grad[c] for c in ycol])
    zero = (torch.zeros_like(gx), torch.zeros_like(gy))   # no damping
    (dx, dy), info, curvature = SchurComplement().solve(BlockArrow(A, W, V, groups),
                                                        (gx, gy), zero)
    assert not info.any()
    # the curvature is each group's s^T H s of the undamped system
    full = torch.zeros(P, dtype=torch.float64)
    for i, c in enumerate(xcol):
        full[c] = dx[i]
    for k, c in enumerate(ycol):
        full[c] = dy[k]
    torch.testing.assert_close(curvature.sum(), full @ H @ full)
    torch.testing.assert_close(dy, torch.stack([step[c] for c in ycol]))
    torch.testing.assert_close(dx, torch.stack([step[c] for c in xcol]))
