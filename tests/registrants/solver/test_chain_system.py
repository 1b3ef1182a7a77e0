"""Levenberg-Marquardt over chains of frames coupled in time (the motion prior)."""
import numpy as np
import pytest
import torch

from smilfit.body_models import SMILModel, demo_model_data
from smilfit.cameras import project_points
from smilfit.datasets.synthetic import ring_cameras
from smilfit.registrants import SMILRegistrant
from smilfit.registrants.solver.chain_system import ChainMotion, MotionTerms

POSE = ['global_orient', 'transl', 'body_pose']


@pytest.fixture(scope='module')
def model():
    return SMILModel(data=demo_model_data(), dtype=torch.float64)


def _video(model, T, animals=1, noise=2.0, seed=0):
    """``animals`` animals' random-walk poses over ``T`` frames (frame-major), seen by
    four cameras with ``noise`` px label noise: observations, truth and noisy starts."""
    g = torch.Generator().manual_seed(seed)
    J = model.num_joints
    rest = model().joints_kin[0]
    L = float((rest.max(0).values - rest.min(0).values).norm())

    def walk(*shape, step):
        w = torch.cumsum(step * torch.randn(T, animals, *shape, generator=g,
                                            dtype=torch.float64), 0)
        return w.reshape(T * animals, *shape)
    pose = dict(global_orient=0.3 + walk(3, step=0.03), transl=walk(3, step=0.01 * L),
                body_pose=0.2 + walk(J - 1, 3, step=0.03))
    points = model(return_vertices=False, **pose).keypoints
    cams = ring_cameras(4, target=np.zeros(3), up=np.array([0.0, 0.0, 1.0]),
                        distance=3.0 * L, elevations_deg=[35, 45, 40, 50],
                        azimuths_deg=[0, 90, 180, 270], focal=1000.0, image_size=(1024, 1024))
    K, R, t = (torch.as_tensor(cams[k]) for k in ('K', 'R', 't'))
    uv = project_points(points[:, None], K, R, t)
    B = T * animals
    uv = uv + noise * torch.randn(uv.shape, generator=g, dtype=torch.float64)
    obs = dict(keypoints_2d=uv, confidence=torch.ones(uv.shape[:3], dtype=torch.float64),
               view_valid=torch.ones(B, 4, dtype=torch.bool), K=K.expand(B, -1, -1, -1),
               R=R.expand(B, -1, -1, -1), t=t.expand(B, -1, -1),
               frame_index=torch.arange(T).repeat_interleave(animals))
    start = {k: v + 0.05 * torch.randn(v.shape, generator=g, dtype=torch.float64)
             for k, v in pose.items()}
    groups = torch.arange(animals).repeat(T)
    return obs, pose, start, groups


def _registrant(model, optimizer, motion=True, n_iter=40, order=1, **stage):
    handlers = [dict(type='Keypoint2DHandler', name='kp2d', loss=dict(type='KeypointMSELoss')),
                dict(type='PosePriorHandler', name='pose_prior', weight=1e-3)]
    if motion:
        handlers.append(dict(type='MotionPriorHandler', name='motion', params=POSE,
                             order=order))
    reg = SMILRegistrant(body_model=model, init='zeros', handlers=handlers, stages=[
        dict(name='s', fit=POSE, n_iter=n_iter, optimizer=optimizer, ftol=1e-14, gtol=1e-12,
             **stage)])
    reg.setup(dict(keypoint_names=model.keypoint_names))
    return reg


@pytest.mark.parametrize('order', [1, 2])
def test_chains_reach_the_summed_losss_minimum(model, order):
    obs, _, start, groups = _video(model, 12, animals=2)
    # (progress_tol=0, noise_tol=0: to the minimum, not to where the last steps stop
    # mattering)
    lm = _registrant(model, dict(type='LevenbergMarquardt', progress_tol=0.0, noise_tol=0.0),
                     order=order).fit(obs, init_params=start, groups=groups)
    lbfgs = _registrant(model, dict(type='LBFGS', max_iter=300, line_search_fn='strong_wolfe',
                                    tolerance_grad=1e-12, tolerance_change=1e-16,
                                    history_size=50), n_iter=3, order=order).fit(
        obs, init_params=start, groups=groups)
    record = lm.history[-1]
    assert record['per_sample'] is False          # solved as chains, not frame by frame
    # the same objective (the stage's loss, motion scales measured at its start)
    assert record['mean_loss_end'] <= lbfgs.history[-1]['mean_loss_end'] * (1 + 1e-6)
    # the same answer where the labels decide it (twists no label sees are free, and in
    # their flat valleys neither optimizer quite stops: 1 %, not better)
    points = [model(return_vertices=False, **{k: r.params[k] for k in POSE}).keypoints
              for r in (lm, lbfgs)]
    assert float((points[0] - points[1]).norm(dim=-1).max()) < 1e-2 * float(
        points[1].std(1).norm(dim=-1).mean())


def test_chains_stop_when_their_steps_stop_mattering(model):
    """The progress test (here at a thousandth) stops a chain once a step lowers its cost
    by under that share of what the stage has lowered it: fewer steps, and the keypoints
    where the minimum has them."""
    obs, _, start, groups = _video(model, 30, animals=2, seed=7)
    # (noise_tol=0: the progress test alone)
    fits = {tol: _registrant(model, dict(type='LevenbergMarquardt', progress_tol=tol,
                                         noise_tol=0.0),
                             n_iter=200).fit(obs, init_params=start, groups=groups)
            for tol in (0.0, 1e-3)}
    steps = {tol: f.history[-1]['unit_steps'] for tol, f in fits.items()}
    assert steps[1e-3] < steps[0.0]
    points = {tol: model(return_vertices=False, **{k: f.params[k] for k in POSE}).keypoints
              for tol, f in fits.items()}
    spread = float(points[0.0].std(1).norm(dim=-1).mean())
    assert float((points[1e-3] - points[0.0]).norm(dim=-1).max()) < 1e-2 * spread
    losses = {tol: f.history[-1]['mean_loss_end'] for tol, f in fits.items()}
    assert losses[0.0] <= losses[1e-3] <= losses[0.0] * (1 + 1e-3)


@pytest.mark.parametrize('noise', [2.0, 0.0])
def test_chains_stop_once_no_frame_gains_a_label_residuals_error(model, noise):
    """With noisy labels a chain's last Gauss-Newton steps converge linearly and move
    frames by less than their standard errors: the noise test (``noise_tol``, a step
    lowering no frame's cost by the chain's cost per label residual row) stops the chains
    in a fraction of the steps, as near the truth as running them to ``n_iter``. Exact
    labels in a loss in pixels leave a noise near zero: it stops them only where they
    are as accurate."""
    obs, truth, start, groups = _video(model, 40, animals=2, noise=noise, seed=11)
    actual = model(return_vertices=False, **truth).keypoints
    fits, errors = {}, {}
    for tol in (0.0, 1.0):
        # (progress_tol=0: only the noise test stops a chain before n_iter)
        fits[tol] = _registrant(model, dict(type='LevenbergMarquardt', progress_tol=0.0,
                                            noise_tol=tol), n_iter=200).fit(
            obs, init_params=start, groups=groups)
        points = model(return_vertices=False,
                       **{k: fits[tol].params[k] for k in POSE}).keypoints
        errors[tol] = (points - actual).norm(dim=-1)
    steps = {tol: f.history[-1]['unit_steps'] for tol, f in fits.items()}
    assert steps[1.0] < steps[0.0] / 2
    if noise:
        assert steps[1.0] < steps[0.0] / 10
    for stat in (torch.median, torch.max):
        assert float(stat(errors[1.0])) < 1.02 * float(stat(errors[0.0]))
    losses = {tol: f.history[-1]['mean_loss_end'] for tol, f in fits.items()}
    # (frames held still once settled are left a little off where their neighbours'
    # later moves put their minimum: in the loss, by under 1 %, not in the keypoints)
    assert losses[0.0] <= losses[1.0] * (1 + 1e-9) and losses[1.0] <= losses[0.0] * (1 + 1e-2)


def test_each_chain_is_its_own_unit(model):
    obs, _, start, groups = _video(model, 10, animals=2, seed=3)
    reg = _registrant(model, dict(type='LevenbergMarquardt'))
    both = reg.fit(obs, init_params=start, groups=groups)
    one = groups == 1
    alone = reg.fit({k: v[one] for k, v in obs.items()},
                    init_params={k: v[one] for k, v in start.items()},
                    groups=torch.zeros(int(one.sum()), dtype=torch.long))
    # (the motion's scale is measured over the batch: the same animal alone differs by
    # that scale only, so compare its keypoints, loosely; rotations no label sees are
    # free to differ)
    points = [model(return_vertices=False, **{k: r.params[k][rows] for k in POSE}).keypoints
              for r, rows in ((both, one), (alone, slice(None)))]
    assert torch.isfinite(points[1]).all()
    assert float((points[0] - points[1]).norm(dim=-1).median()) < 0.01 * float(
        points[1].std(1).norm(dim=-1).mean())


def test_the_motion_prior_brings_noisy_frames_nearer_the_truth(model):
    obs, truth, start, groups = _video(model, 40, noise=6.0, seed=5)
    errors = {}
    for motion in (False, True):
        fit = _registrant(model, dict(type='LevenbergMarquardt'), motion=motion).fit(
            obs, init_params=start, groups=groups)
        moved = model(return_vertices=False, **{k: fit.params[k] for k in POSE}).keypoints
        actual = model(return_vertices=False, **truth).keypoints
        errors[motion] = float((moved - actual).norm(dim=-1).median())
    assert errors[True] < 0.9 * errors[False]


def test_frames_far_apart_are_fitted_alone(model):
    obs, _, start, groups = _video(model, 6, seed=7)
    obs['frame_index'] = obs['frame_index'] * 10          # labelled frames, far apart
    fit = _registrant(model, dict(type='LevenbergMarquardt')).fit(
        obs, init_params=start, groups=groups)
    assert fit.history[-1]['per_sample'] is True
    assert float(fit.losses['motion'].abs().sum()) == 0.0


def test_motion_terms_of_chains_shorter_than_their_stencil():
    """Acceleration terms on chains of 1, 2 and 3 frames: shaped as the chains, zero where
    no residual reaches back two frames, and the gradient ``J^T r`` of the cost."""
    prev = torch.tensor([-1, -1, 1, -1, 3, 4])      # chains [0], [1, 2], [3, 4, 5]
    P = 4
    g = torch.Generator().manual_seed(0)
    scale = torch.rand(6, P, generator=g, dtype=torch.float64) + 0.5
    motion = ChainMotion(MotionTerms(prev, (1.0, -2.0, 1.0), scale, torch.zeros(6)),
                         torch.zeros(6, dtype=torch.bool), 'cpu', torch.float64)
    x = torch.randn(6, P, generator=g, dtype=torch.float64, requires_grad=True)
    for chain in range(3):
        table, _ = motion.frames(torch.tensor([chain]))
        X = motion.gather(x, table)
        cost, (grad, diag, below) = motion.terms(X, table)
        T = table.shape[1]
        assert cost.shape == (1, T) and grad.shape == diag.shape == (1, T, P)
        assert below.shape == (1, T, 2, P)
        (autograd,) = torch.autograd.grad(cost.sum(), X)
        assert torch.allclose(grad, 0.5 * autograd)
        cost = cost.detach()
        if T < 3:
            assert float(cost.abs().sum() + diag.abs().sum() + below.abs().sum()) == 0.0
        else:
            assert float(cost.sum()) > 0.0


def test_acceleration_fits_a_video_with_lone_frames(model):
    """Frames whose neighbours are missing stand alone in chains of one; the acceleration
    prior's chain system takes them with the longer chains."""
    obs, truth, start, groups = _video(model, 10, animals=2, noise=1.0, seed=13)
    # animal 0 has every other frame only: each a chain of one, stepped alone while the
    # other animal's chain is rejected or done
    keep = ~((groups == 0) & (obs['frame_index'] % 2 == 1))
    obs = {k: v[keep] if torch.is_tensor(v) and v.shape[0] == keep.numel() else v
           for k, v in obs.items()}
    start = {k: v[keep] for k, v in start.items()}
    fit = _registrant(model, dict(type='LevenbergMarquardt'), order=2).fit(
        obs, init_params=start, groups=groups[keep])
    assert fit.history[-1]['per_sample'] is False
    assert all(bool(torch.isfinite(fit.params[k]).all()) for k in POSE)
    moved = model(return_vertices=False, **{k: fit.params[k] for k in POSE}).keypoints
    actual = model(return_vertices=False, **{k: v[keep] for k, v in truth.items()}).keypoints
    assert float((moved - actual).norm(dim=-1).median()) < 0.05 * float(
        actual.std(1).norm(dim=-1).mean())


def test_frames_drawn_anew_under_consecutive_indices_are_fitted_alone(model):
    # 60 poses drawn anew, numbered 0..59 (images of a collection, a synthetic session):
    # once a per-frame stage has measured the fit's precision, the motion stage finds no
    # walk in them and fits every frame alone, as without the motion prior
    obs, _, start, groups = _video(model, 60, noise=0.5, seed=11)
    g = torch.Generator().manual_seed(12)
    order = torch.randperm(60, generator=g)            # the walk's frames shuffled
    obs = {k: v[order] if torch.is_tensor(v) and v.shape[0] == 60 and k != 'frame_index'
           else v for k, v in obs.items()}
    start = {k: v[order] for k, v in start.items()}
    handlers = [dict(type='Keypoint2DHandler', name='kp2d', loss=dict(type='KeypointMSELoss')),
                dict(type='PosePriorHandler', name='pose_prior', weight=1e-3),
                dict(type='MotionPriorHandler', name='motion', params=POSE)]
    lm = dict(type='LevenbergMarquardt')
    reg = SMILRegistrant(body_model=model, init='zeros', handlers=handlers, stages=[
        dict(name='alone', fit=POSE, n_iter=20, optimizer=lm, loss_weights=dict(motion=0.0)),
        dict(name='smoothed', fit=POSE, n_iter=20, optimizer=lm)])
    reg.setup(dict(keypoint_names=model.keypoint_names))
    fit = reg.fit(obs, init_params=start, groups=groups)
    assert fit.history[-1]['per_sample'] is True
    assert float(fit.losses['motion'].abs().sum()) == 0.0
    # the same frames in their video's order keep the link
    video, _, start, groups = _video(model, 60, noise=0.5, seed=11)
    fit = reg.fit(video, init_params=start, groups=groups)
    assert fit.history[-1]['per_sample'] is False
    assert float(fit.losses['motion'].abs().sum()) > 0.0


def _skeleton_registrant(model, optimizer, n_iter=40, **stage):
    reg = SMILRegistrant(body_model=model, init='zeros', shared=dict(bone_trans=True),
                         handlers=[dict(type='Keypoint2DHandler', name='kp2d',
                                        loss=dict(type='KeypointMSELoss')),
                                   dict(type='PosePriorHandler', name='pose_prior',
                                        weight=1e-3),
                                   dict(type='SkeletonPriorHandler', name='skeleton_prior'),
                                   dict(type='MotionPriorHandler', name='motion',
                                        params=POSE)],
                         stages=[dict(name='s', fit=POSE + ['bone_trans'], n_iter=n_iter,
                                      optimizer=optimizer, ftol=1e-14, gtol=1e-12, **stage)])
    reg.setup(dict(keypoint_names=model.keypoint_names))
    return reg


def test_shared_parameters_and_chains_in_one_stage_reach_the_summed_losss_minimum(model):
    obs, _, start, groups = _video(model, 8, animals=2, seed=8)
    lm = _skeleton_registrant(model, dict(type='LevenbergMarquardt', progress_tol=0.0)).fit(
        obs, init_params=start, groups=groups)
    lbfgs = _skeleton_registrant(model, dict(type='LBFGS', max_iter=300,
                                             line_search_fn='strong_wolfe',
                                             tolerance_grad=1e-12, tolerance_change=1e-16,
                                             history_size=50), n_iter=3).fit(
        obs, init_params=start, groups=groups)
    assert lm.history[-1]['mean_loss_end'] <= lbfgs.history[-1]['mean_loss_end'] * (1 + 1e-6)
    # (a bone's length trades off against its neighbours' rotations: a flat valley in
    # which neither optimizer has quite stopped, so the points agree to 1 %, not better)
    points = [model(return_vertices=False, **{k: r.params[k] for k in POSE + ['bone_trans']}
                    ).keypoints for r in (lm, lbfgs)]
    assert float((points[0] - points[1]).norm(dim=-1).max()) < 1e-2 * float(
        points[1].std(1).norm(dim=-1).mean())


def test_a_skeleton_fitted_with_chains_reaches_its_minimum_not_where_chains_stop(model):
    """The progress test stops chains of frames whose last steps creep along what the
    labels hardly see; a skeleton shared by the frames must not be stopped with them (a
    bone's length trades off against its neighbours' rotations in a flat valley): from a
    skeleton 5 % of the body off, on labels without noise, the bones come back to within
    0.2 % (stopped with the chains, they stayed 6.5 % off)."""
    from smilfit.datasets.synthetic_animals import bone_lengths
    obs, _, start, groups = _video(model, 30, animals=2, noise=0.0, seed=3)
    rest = model().joints_kin[0]
    L = float((rest.max(0).values - rest.min(0).values).norm())
    g = torch.Generator().manual_seed(1)
    start['bone_trans'] = 0.05 * L * torch.randn(2, model.num_joints, 3, generator=g,
                                                 dtype=torch.float64)
    fit = _skeleton_registrant(model, dict(type='LevenbergMarquardt'), n_iter=100).fit(
        obs, init_params=start, groups=groups)
    truth = bone_lengths(model, bone_trans=torch.zeros(model.num_joints, 3))
    worst = max(float((bone_lengths(model, bone_trans=b) - truth).abs().max())
                for b in fit.params['bone_trans'])
    assert worst < 2e-3 * L


def test_the_reported_losses_are_the_last_stages(model):
    # the fit's final losses measure the motion's scale as the last stage did: on each
    # frame's own fit with its posterior variance (on the smoothed answer it would show
    # less motion than there is, and the motion loss would be inflated)
    obs, _, start, groups = _video(model, 30, seed=4)
    lm = dict(type='LevenbergMarquardt')
    reg = SMILRegistrant(body_model=model, init='zeros', handlers=[
        dict(type='Keypoint2DHandler', name='kp2d', loss=dict(type='KeypointMSELoss')),
        dict(type='PosePriorHandler', name='pose_prior', weight=1e-3),
        dict(type='MotionPriorHandler', name='motion', params=POSE)], stages=[
        dict(name='pose', fit=POSE, n_iter=30, optimizer=lm, loss_weights=dict(motion=0.0)),
        dict(name='s', fit=POSE, n_iter=30, optimizer=lm)])
    reg.setup(dict(keypoint_names=model.keypoint_names))
    fit = reg.fit(obs, init_params=start, groups=groups)
    assert fit.history[-1]['per_sample'] is False
    end = fit.history[-1]['mean_loss_end']
    assert abs(float(fit.total_loss.mean()) - end) < 0.01 * end


def test_runs_of_moving_frames_break_at_the_frozen_ones():
    table = torch.tensor([[0, 1, 2, 3, 4, 5], [6, 7, 8, -1, -1, -1]])
    moving = torch.tensor([[True, True, False, True, True, True],
                           [False, True, True, False, False, False]])
    motion = ChainMotion(MotionTerms(torch.full((9,), -1), (1.0, -1.0), torch.zeros(9, 2),
                                     torch.zeros(9)), torch.zeros(9, dtype=torch.bool),
                         'cpu', torch.float64)
    runs, row, lengths, at = motion.segments(table, moving)
    assert runs.tolist() == [[0, 1, -1], [3, 4, 5], [7, 8, -1]]
    assert row.tolist() == [0, 0, 1] and lengths.tolist() == [2, 3, 2]
    # each moving frame's place in the runs, -1 for the others
    flat = runs.flatten()
    assert (flat[at[moving]] == table[moving]).all() and (at[~moving] == -1).all()


@pytest.mark.parametrize('order', [1, 2])
def test_a_frozen_frame_is_held_and_its_neighbours_solved_against_it(model, monkeypatch,
                                                                     order):
    """A chain with every third frame held still: those frames' steps are 0 and the others'
    are the damped system's solution with the held frames' steps fixed at 0 (their
    motion terms on their neighbours' diagonal and gradient, not coupled): the dense
    system, rows and columns of the held frames taken out."""
    from smilfit.registrants.solver import chain_system
    obs, _, start, groups = _video(model, 9, animals=2, seed=5)
    seen = []
    propose = chain_system.ChainSystem.propose

    def checking(system, units, lam):
        if seen:
            return propose(system, units, lam)
        m = system.motion
        table, _ = m.frames(units)
        system.frozen[table[:, ::3][table[:, ::3] >= 0]] = True
        trial = propose(system, units, lam)
        X = m.gather(system.x, table)
        grad_m, diag_m, below_m = (m.gather(t, table) for t in system.motion_normal)
        g = m.gather(system.g, table) + grad_m
        H = system.H.to(system.dtype)
        P = X.shape[2]
        for c in range(table.shape[0]):
            n = int(m.lengths[units[c]])
            frames = table[c, :n]
            diag = torch.stack([H[f].diagonal() for f in frames]) + diag_m[c, :n]
            mean = diag.sum() / (n * P)
            D = lam[c] * system.damping(diag.reshape(1, -1), mean[None],
                                        diag.amax()[None]).reshape(n, P)
            A = torch.zeros(n * P, n * P, dtype=system.dtype)
            for t in range(n):
                A[t * P:(t + 1) * P, t * P:(t + 1) * P] = H[frames[t]] + torch.diag(
                    diag_m[c, t] + D[t])
                for d in range(1, min(order, t) + 1):
                    block = torch.diag(below_m[c, t, d - 1])
                    A[t * P:(t + 1) * P, (t - d) * P:(t - d + 1) * P] = block
                    A[(t - d) * P:(t - d + 1) * P, t * P:(t + 1) * P] = block
            keep = (~system.frozen[frames]).repeat_interleave(P)
            step = torch.zeros(n * P, dtype=system.dtype)
            step[keep] = -torch.linalg.solve(A[keep][:, keep], g[c, :n].reshape(-1)[keep])
            torch.testing.assert_close((trial.x[c, :n] - X[c, :n]).reshape(-1), step,
                                       rtol=1e-6, atol=1e-9)
            assert (trial.x[c, :n][system.frozen[frames]]
                    == X[c, :n][system.frozen[frames]]).all()
        seen.append(trial)
        return trial
    monkeypatch.setattr(chain_system.ChainSystem, 'propose', checking)
    # (noise_tol=0: no frame is set moving again by the test of its own gain)
    _registrant(model, dict(type='LevenbergMarquardt', noise_tol=0.0), n_iter=3,
                order=order).fit(obs, init_params=start, groups=groups)
    assert seen and bool(seen[0].moving.any()) and not bool(
        seen[0].moving[seen[0].table >= 0].all())


def test_settled_frames_are_held_as_near_the_truth_as_the_full_minimum(model, monkeypatch):
    """Noisy labels: a frame whose steps lowered its cost by less than the labels' errors
    twice in a row is held still, and no longer linearised or solved; the keypoints stay
    as near the truth as the chains' full minimum's."""
    from smilfit.registrants.solver import chain_system
    obs, truth, start, groups = _video(model, 100, animals=2, noise=2.0, seed=4)
    actual = model(return_vertices=False, **truth).keypoints
    counts = {'frozen': 0}
    freeze = chain_system.ChainSystem._freeze

    def freezing(system, trial, accept):
        before = int(system.frozen.sum())
        freeze(system, trial, accept)
        counts['frozen'] += int(system.frozen.sum()) - before
    monkeypatch.setattr(chain_system.ChainSystem, '_freeze', freezing)
    held = _registrant(model, dict(type='LevenbergMarquardt', progress_tol=0.0),
                       n_iter=200).fit(obs, init_params=start, groups=groups)
    monkeypatch.undo()
    assert counts['frozen'] > 0
    full = _registrant(model, dict(type='LevenbergMarquardt', progress_tol=0.0, noise_tol=0.0),
                       n_iter=200).fit(obs, init_params=start, groups=groups)
    errors = [(model(return_vertices=False, **{k: f.params[k] for k in POSE}).keypoints
               - actual).norm(dim=-1) for f in (held, full)]
    assert float(errors[0].median()) < 1.02 * float(errors[1].median())


def test_a_frozen_frame_whose_own_step_would_gain_more_moves_again(model, monkeypatch):
    """Frames held still far from their minimum (at the stage's start, every third one)
    next to moving ones: a step of their own would lower their cost by far more than the
    labels' errors, so they are set moving again in that very step."""
    from smilfit.registrants.solver import chain_system
    obs, _, start, groups = _video(model, 9, animals=2, seed=5)
    seen = []
    propose = chain_system.ChainSystem.propose

    def freezing_first(system, units, lam):
        if not seen:
            table, _ = system.motion.frames(units)
            system.frozen[table[:, ::3][table[:, ::3] >= 0]] = True
        trial = propose(system, units, lam)
        seen.append((trial, system.frozen.clone()))
        return trial
    monkeypatch.setattr(chain_system.ChainSystem, 'propose', freezing_first)
    _registrant(model, dict(type='LevenbergMarquardt'), n_iter=2).fit(
        obs, init_params=start, groups=groups)
    trial, frozen = seen[0]
    assert bool(trial.moving[trial.table >= 0].all()) and not bool(frozen.any())

