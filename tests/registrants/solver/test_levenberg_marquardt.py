"""Batched per-sample Levenberg-Marquardt: residual forms, recovery, independence, errors."""
import numpy as np
import pytest
import torch

from smilfit.body_models import SMILModel, demo_model_data
from smilfit.cameras import project_points
from smilfit.datasets.synthetic import ring_cameras
from smilfit.registry import HANDLERS
from smilfit.registrants import SMILRegistrant
from smilfit.registrants.solver import linear_solver
from smilfit.registrants.solver import loop as lm
from smilfit.registrants.solver import problem as problem_module
from smilfit.registrants.solver import residual_blocks
from smilfit.registrants.solver.normal_equations import (ConstantJacobian, DiagonalJacobian,
                                                        add_param_block)
from smilfit.registrants.solver.options import LMOptions


@pytest.fixture(scope='module')
def model():
    return SMILModel(data=demo_model_data(), dtype=torch.float64)


def _problem(model, B, noise=0.0, missing=0.0, seed=0, views=4):
    g = torch.Generator().manual_seed(seed)
    J, K = model.num_joints, model.num_betas
    truth = dict(global_orient=0.3 * torch.randn(B, 3, generator=g, dtype=torch.float64),
                 body_pose=0.3 * torch.randn(B, J - 1, 3, generator=g, dtype=torch.float64),
                 betas=torch.randn(B, K, generator=g, dtype=torch.float64))
    joints = model(**truth, return_vertices=False).joints
    rest = model().joints_kin[0]
    length = float((rest.max(0).values - rest.min(0).values).norm())
    cams = ring_cameras(views, target=np.zeros(3), up=np.array([0.0, 0.0, 1.0]),
                        distance=3.0 * length, elevations_deg=[35, 45, 40, 50][:views],
                        azimuths_deg=[0, 90, 180, 270][:views], focal=1000.0,
                        image_size=(1024, 1024))
    K_, R_, t_ = (torch.as_tensor(cams[k]) for k in ('K', 'R', 't'))
    uv = project_points(joints[:, None], K_, R_, t_)
    uv = uv + noise * torch.randn(uv.shape, generator=g, dtype=torch.float64)
    drop = torch.rand(uv.shape[:3], generator=g, dtype=torch.float64) < missing
    uv = torch.where(drop[..., None], torch.full_like(uv, float('nan')), uv)
    obs = dict(keypoints_2d=uv, confidence=(~drop).to(torch.float64),
               view_valid=torch.ones(B, views, dtype=torch.bool),
               K=K_.expand(B, -1, -1, -1), R=R_.expand(B, -1, -1, -1), t=t_.expand(B, -1, -1))
    return obs, joints, length


def _registrant(model, n_iter=20, handlers=None, fit=('global_orient', 'transl', 'body_pose',
                                                       'betas'), stopping=(1e-15, 1e-12),
                **stage):
    handlers = handlers or [
        dict(type='Keypoint2DHandler', name='kp2d', source='joints'),
        dict(type='ShapePriorHandler', name='shape', weight=1e-4)]
    reg = SMILRegistrant(body_model=model, handlers=handlers, stages=[
        dict(name='lm', fit=list(fit), n_iter=n_iter,
             optimizer=dict(type='LevenbergMarquardt', **stage.pop('optimizer', {})),
             ftol=stopping[0], gtol=stopping[1], **stage)])
    reg.setup(dict(keypoint_names=model.joint_names))
    return reg


@pytest.mark.parametrize('loss', [dict(type='KeypointMSELoss'),
                                  dict(type='KeypointMSELoss', robust='gmof', sigma=3.0,
                                       normalize='mean', loss_weight=0.7),
                                  dict(type='KeypointMSELoss', normalize='weighted_mean')])
def test_keypoint2d_residuals_square_to_the_loss(model, loss):
    obs, _, _ = _problem(model, 3, noise=5.0, missing=0.3)
    obs['confidence'] = torch.rand(obs['confidence'].shape, dtype=torch.float64) * obs['confidence']
    h = HANDLERS.build(dict(type='Keypoint2DHandler', name='kp', source='joints', loss=loss))
    h.setup(model, dict(keypoint_names=model.joint_names))
    out = model(global_orient=0.1 * torch.ones(3, 3, dtype=torch.float64))
    pts = out.joints.index_select(1, h.pool_index(model))
    r = h.point_residuals(pts, obs, {})
    assert r.shape == (3, 4, model.num_joints, 2)
    torch.testing.assert_close((r * r).sum((1, 2, 3)), h.compute(out, obs, {}))


def test_keypoint3d_and_shape_prior_residuals(model):
    g = torch.Generator().manual_seed(1)
    out = model(betas=torch.randn(2, model.num_betas, generator=g, dtype=torch.float64))
    target = out.joints + torch.randn(out.joints.shape, generator=g, dtype=torch.float64)
    h = HANDLERS.build(dict(type='Keypoint3DHandler', name='k3', source='joints',
                            loss=dict(type='KeypointMSELoss', robust='gmof', sigma=0.5)))
    h.setup(model, dict(keypoint_names=model.joint_names))
    r = h.point_residuals(out.joints, dict(keypoints_3d=target), {})
    torch.testing.assert_close((r * r).sum((1, 2, 3)),
                               h.compute(out, dict(keypoints_3d=target), {}))
    prior = HANDLERS.build(dict(type='ShapePriorHandler', name='shape'))
    prior.setup(model)
    params = dict(betas=torch.randn(2, model.num_betas, generator=g, dtype=torch.float64))
    r = prior.param_residuals(params, {})
    torch.testing.assert_close((r * r).sum(1), prior.compute(out, {}, params))


def test_noise_free_recovery(model):
    obs, truth, length = _problem(model, 4)
    result = _registrant(model, n_iter=30).fit(obs)
    err = (result.output.joints - truth).norm(dim=-1).mean() / length
    assert float(err) < 1e-5, float(err)   # 0.001 % of the body length
    assert result.history[0]['per_sample']


@pytest.mark.parametrize('linear_dtype', ['float64', 'float32'])
def test_batched_equals_per_frame_loop(model, linear_dtype):
    obs, truth, length = _problem(model, 5, noise=2.0, missing=0.2, seed=3)
    reg = _registrant(model, n_iter=15, optimizer=dict(linear_dtype=linear_dtype))
    batched = reg.fit(obs).output.joints
    looped = torch.cat([reg.fit({k: v[i:i + 1] for k, v in obs.items()}).output.joints
                        for i in range(5)])
    rel = (batched - looped).norm(dim=-1).max() / length
    assert float(rel) < 1e-6, float(rel)
    # and the noisy fit is better than nothing: well inside the body length
    assert float((batched - truth).norm(dim=-1).mean() / length) < 0.01


def test_unit_steps_count_every_sample_s_own_iterations(model):
    """A stage's ``unit_steps`` is the sum of the iterations each sample takes fitted alone
    (a converged sample is not stepped again), ``steps`` the largest of them; samples
    started at different distances take different numbers, so the two differ."""
    obs, truth, length = _problem(model, 4, noise=1.0, seed=5)
    reg = _registrant(model, n_iter=40, stopping=(1e-10, 1e-12))
    together = reg.fit(obs).history[0]
    alone = [reg.fit({k: v[i:i + 1] for k, v in obs.items()}).history[0]['steps']
             for i in range(4)]
    assert together['unit_steps'] == sum(alone)
    assert together['steps'] == max(alone) and len(set(alone)) > 1
    assert together['unit_steps'] < 4 * together['steps']


def test_a_stage_in_rounds_sums_its_rounds_unit_steps():
    from smilfit.registrants.stage_runners import merge_rounds
    records = [dict(stage='s', steps=s, unit_steps=u, mean_loss_start=1.0, mean_loss_end=0.5,
                    loss_trace=[0.5]) for s, u in ((3, 7), (2, 5))]
    merged = merge_rounds(records)
    assert (merged['steps'], merged['unit_steps'], merged['rounds']) == (5, 12, 2)
    for missing in (0, 1):   # a round whose optimizer does not count them
        partial = [dict(r) for r in records]
        del partial[missing]['unit_steps']
        assert 'unit_steps' not in merge_rounds(partial)


def test_unsupported_handler_is_named(model):
    reg = _registrant(model, handlers=[
        dict(type='Keypoint2DHandler', name='kp2d', source='joints'),
        dict(type='LimbLengthHandler', name='limbs', source='joints',
             pairs=[[model.joint_names[0], model.joint_names[1]]], target_lengths=[1.0])])
    obs, _, _ = _problem(model, 2)
    with pytest.raises(ValueError, match="'limbs'"):
        reg.fit(obs)


def test_unsupported_parameter_and_sharing(model):
    obs, _, _ = _problem(model, 2)
    with pytest.raises(ValueError, match='log_scale'):
        _registrant(model, fit=('global_orient', 'log_scale')).fit(obs)
    # shared parameters go to the group solver (test_group_system.py);
    # per_sample=False (one optimizer on the summed loss) is not Levenberg-Marquardt's
    reg = SMILRegistrant(body_model=model, shared=dict(betas=True), handlers=[
        dict(type='Keypoint2DHandler', name='kp2d', source='joints')], stages=[
        dict(name='lm', fit=['betas'], optimizer=dict(type='LM'), per_sample=False)])
    reg.setup(dict(keypoint_names=model.joint_names))
    with pytest.raises(ValueError, match='per_sample=False'):
        reg.fit(obs)


def test_options_are_validated():
    with pytest.raises(ValueError, match='unknown Levenberg-Marquardt option'):
        LMOptions.from_config(dict(max_iter=3), 'stage x')
    with pytest.raises(ValueError, match='damping'):
        LMOptions.from_config(dict(damping='none'), 'stage x')
    with pytest.raises(ValueError, match='progress_tol'):
        LMOptions.from_config(dict(progress_tol=1.5), 'stage x')
    with pytest.raises(ValueError, match='noise_tol'):
        LMOptions.from_config(dict(noise_tol=-1.0), 'stage x')
    assert LMOptions.from_config(dict(noise_tol=0), 'stage x').noise_tol == 0.0


@pytest.mark.parametrize('tol', [0.0, 1e-3])
def test_the_progress_test_stops_a_unit_whose_steps_stopped_mattering(tol):
    """With ``progress_tol``, a unit stops at the first accepted step that lowers its
    cost by less than that share of all it has lowered it since its first step (a
    chain creeping along a flat valley); the relative test alone lets it go on."""
    from smilfit.registrants.solver.trust_region import TrustRegion
    region = TrustRegion(2, LMOptions(), 1e-12, torch.float64, 'cpu', progress_tol=tol)
    units = torch.arange(2)
    one = torch.ones(2, dtype=torch.float64)

    def step(old, new):
        old, new = torch.tensor(old, dtype=torch.float64), torch.tensor(new, dtype=torch.float64)
        return region.judge(units, old, new, old - new, one.bool(), one * 0.1, one)
    accept, stop = step([1000.0, 1000.0], [500.0, 500.0])
    assert accept.all() and not stop.any()
    # 500 lowered so far; the next steps lower unit 0 by 0.4 (under 1e-3 of 500.4) and
    # unit 1 by 0.6 (over it)
    accept, stop = step([500.0, 500.0], [499.6, 499.4])
    assert accept.all()
    assert stop.tolist() == ([True, False] if tol else [False, False])


def test_a_settled_step_stops_its_unit_where_it_is_accepted():
    """A system's own test that a step changes nothing the data can tell (``settled``)
    stops the unit after it, but only where the step is taken."""
    from smilfit.registrants.solver.trust_region import TrustRegion
    region = TrustRegion(3, LMOptions(), 1e-12, torch.float64, 'cpu')
    old = torch.full((3,), 100.0, dtype=torch.float64)
    new = torch.tensor([50.0, 50.0, 150.0], dtype=torch.float64)
    one = torch.ones(3, dtype=torch.float64)
    settled = torch.tensor([True, False, True])
    predicted = torch.full((3,), 60.0, dtype=torch.float64)
    accept, stop = region.judge(torch.arange(3), old, new, predicted, one.bool(), one * 0.1,
                                one, settled)
    assert accept.tolist() == [True, True, False]
    assert stop.tolist() == [True, False, False]


def test_data_rows_count_the_seen_label_residuals_not_the_priors(model):
    """Each sample's point residual rows are two per keypoint seen in a valid view; an
    unseen keypoint, a view left out and a prior's rows add none (the noise test of the
    chains divides the cost by them)."""
    obs, joints, _ = _problem(model, 3, noise=1.0, missing=0.3, seed=4)
    obs['view_valid'][1, 2] = False
    kp = HANDLERS.build(dict(type='Keypoint2DHandler', name='kp2d', source='joints'))
    kp.setup(model, dict(keypoint_names=model.joint_names))
    prior = HANDLERS.build(dict(type='PosePriorHandler', name='pose', weight=1e-4))
    prior.setup(model)
    B, J = 3, model.num_joints
    params = dict(global_orient=torch.zeros(B, 3, dtype=torch.float64),
                  transl=torch.zeros(B, 3, dtype=torch.float64),
                  body_pose=0.1 * torch.ones(B, J - 1, 3, dtype=torch.float64),
                  betas=torch.zeros(B, model.num_betas, dtype=torch.float64))

    def cost_fn(p, o):
        output = model(**p, return_vertices=False)
        return kp(output, o, p) + prior(output, o, p)
    problem = problem_module.LeastSquaresProblem(
        model, [kp, prior], obs, params, ['global_orient', 'transl', 'body_pose'], cost_fn)
    rows = problem.data_rows(problem.initial_x(), torch.arange(B))
    seen = (obs['confidence'] > 0) & obs['view_valid'][..., None]
    assert rows.tolist() == (2 * seen.sum((1, 2))).tolist()
    assert int(rows[1]) < 2 * int((obs['confidence'][1] > 0).sum())


def test_pose_l2_prior_residuals_and_lm_with_priors(model):
    prior = HANDLERS.build(dict(type='PosePriorHandler', name='pose',
                                loss=dict(type='PoseL2Prior', loss_weight=2.0,
                                          joint_weights=list(range(model.num_joints - 1)))))
    prior.setup(model)
    assert prior.residual_kind == 'params'
    pose = torch.randn(3, model.num_joints - 1, 3, dtype=torch.float64)
    r = prior.param_residuals(dict(body_pose=pose), {})
    torch.testing.assert_close((r * r).sum(1), prior.compute(None, {}, dict(body_pose=pose)))
    gmm = HANDLERS.build(dict(type='PosePriorHandler', name='pose', loss=dict(
        type='GaussianPosePrior', mean=[0.0] * (3 * (model.num_joints - 1)),
        precision=np.eye(3 * (model.num_joints - 1)).tolist())))
    assert gmm.residual_kind is None
    # LM with a pose prior minimises the same objective the gradient methods do
    obs, _, _ = _problem(model, 2, noise=1.0)
    handlers = [dict(type='Keypoint2DHandler', name='kp2d', source='joints'),
                dict(type='ShapePriorHandler', name='shape', weight=1e-2),
                dict(type='PosePriorHandler', name='pose', weight=50.0)]
    lm = _registrant(model, n_iter=20, handlers=handlers).fit(obs)
    lbfgs = SMILRegistrant(body_model=model, handlers=handlers, stages=[dict(
        name='s', fit=['global_orient', 'transl', 'body_pose', 'betas'], n_iter=8,
        optimizer=dict(type='LBFGS', max_iter=50), ftol=1e-15, gtol=1e-12)])
    lbfgs.setup(dict(keypoint_names=model.joint_names))
    ref = lbfgs.fit(obs)
    # LM's minimum is at least as low as 400 L-BFGS iterations' (to 0.1 %)
    assert bool((lm.total_loss <= ref.total_loss * 1.001).all()), (lm.total_loss, ref.total_loss)


def test_global_scale_recovers_a_model_in_other_units(model):
    """Data in units 40x the model's: Umeyama initialisation + LM on the global scale."""
    B = 3
    g = torch.Generator().manual_seed(7)
    J = model.num_joints
    truth = dict(global_orient=0.3 * torch.randn(B, 3, generator=g, dtype=torch.float64),
                 body_pose=0.2 * torch.randn(B, J - 1, 3, generator=g, dtype=torch.float64),
                 global_log_scale=torch.full((B, 1), float(np.log(40.0)), dtype=torch.float64))
    joints = model(**truth, return_vertices=False).joints
    length = float((joints[0].max(0).values - joints[0].min(0).values).norm())
    cams = ring_cameras(4, target=np.zeros(3), up=np.array([0.0, 0.0, 1.0]),
                        distance=3.0 * length, elevations_deg=[35, 45, 40, 50],
                        azimuths_deg=[0, 90, 180, 270], focal=1000.0, image_size=(1024, 1024))
    K_, R_, t_ = (torch.as_tensor(cams[k]) for k in ('K', 'R', 't'))
    obs = dict(keypoints_2d=project_points(joints[:, None], K_, R_, t_),
               K=K_.expand(B, -1, -1, -1), R=R_.expand(B, -1, -1, -1), t=t_.expand(B, -1, -1))
    reg = _registrant(model, n_iter=30, fit=('global_orient', 'transl', 'body_pose',
                                             'global_log_scale'))
    result = reg.fit(obs)
    torch.testing.assert_close(result.params['global_log_scale'], truth['global_log_scale'],
                               rtol=0, atol=1e-5)
    assert float((result.output.joints - joints).norm(dim=-1).max() / length) < 1e-5


@pytest.mark.parametrize('loss', [dict(type='KeypointMSELoss'),
                                  dict(type='KeypointMSELoss', robust='gmof', sigma=3.0,
                                       normalize='weighted_mean')])
def test_closed_form_keypoint2d_jacobian_matches_forward_mode(model, loss):
    """The hand-written projection/distortion/robust derivatives equal forward-mode AD."""
    obs, _, _ = _problem(model, 3, noise=4.0, missing=0.3)
    obs['dist'] = torch.tensor([-0.2, 0.05, 0.001, -0.002, 0.01],
                               dtype=torch.float64).expand(3, 4, 5)
    obs['confidence'] = obs['confidence'] * torch.rand(obs['confidence'].shape,
                                                       dtype=torch.float64)
    h = HANDLERS.build(dict(type='Keypoint2DHandler', name='kp', source='joints', loss=loss))
    h.setup(model, dict(keypoint_names=model.joint_names))
    pts = model(global_orient=0.2 * torch.ones(3, 3, dtype=torch.float64)).joints
    r, A = h.point_residuals_and_jacobian(pts, obs, {})
    basis = torch.eye(3, dtype=pts.dtype)[:, None, None, :].expand(3, *pts.shape)
    r2, A2 = residual_blocks._jvp3(lambda p: h.point_residuals(p, obs, {}), pts, basis)
    torch.testing.assert_close(r, r2)
    torch.testing.assert_close(A, A2, rtol=1e-9, atol=1e-9)

    # a plugin loss with residuals but no residual_jacobian (used below), and one whose
    # residual_jacobian gives the (..., 2, 2) derivatives (no chain)
    class ResidualsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

        def residuals(self, *args, **kwargs):
            return self.inner.residuals(*args, **kwargs)

    class Plugin(ResidualsOnly):
        def residual_jacobian(self, pred, target, weight=None, mask=None):
            return self.inner.residual_jacobian(pred, target, weight=weight, mask=mask)
    closed_form = h.loss
    h.loss = Plugin(closed_form)
    r3, A3 = h.point_residuals_and_jacobian(pts, obs, {})
    torch.testing.assert_close(r3, r)
    torch.testing.assert_close(A3, A)

    # the loss without residual_jacobian: no closed form, and the solver differentiates
    # its residuals by forward mode instead, to the same terms
    h.loss = ResidualsOnly(closed_form)
    assert not hasattr(h.loss, 'residual_jacobian')
    assert h.point_residuals_and_jacobian(pts, obs, {}) is None
    h.weight = 4.0
    r4, A4 = residual_blocks.point_terms(h, pts, obs, {})
    torch.testing.assert_close(r4, 2.0 * r)
    torch.testing.assert_close(A4, 2.0 * A, rtol=1e-9, atol=1e-9)


def test_joint_frame_offsets_in_levenberg_marquardt(model):
    """Keypoints a fixed joint-frame offset away from the model's (markers on the skin):
    with the offsets given, LM recovers the pose exactly, and its gradient is the cost's."""
    from smilfit.body_models.keypoint_naming import rotate_offsets, source_carriers
    from smilfit.registrants.solver.problem import LeastSquaresProblem
    B, J = 3, model.num_joints
    g = torch.Generator().manual_seed(11)
    truth = dict(global_orient=0.3 * torch.randn(B, 3, generator=g, dtype=torch.float64),
                 body_pose=0.3 * torch.randn(B, J - 1, 3, generator=g, dtype=torch.float64))
    out = model(**truth, return_vertices=False)
    Kp = len(model.keypoint_names)
    obs, _, length = _problem(model, B)
    offsets = 0.03 * length * torch.randn(1, Kp, 3, generator=g, dtype=torch.float64)
    points = out.keypoints + rotate_offsets(offsets, out.joint_transforms,
                                            source_carriers(model, 'keypoints'))
    obs['keypoints_2d'] = project_points(points[:, None], obs['K'][0], obs['R'][0], obs['t'][0])
    obs.pop('confidence')
    handler = dict(type='Keypoint2DHandler', name='kp2d', offsets_frame='joint')
    stages = [dict(name='lm', fit=['global_orient', 'transl', 'body_pose'], n_iter=20,
                   optimizer=dict(type='LevenbergMarquardt'), ftol=1e-15, gtol=1e-12)]
    reg = SMILRegistrant(body_model=model, handlers=[handler], init='zeros', stages=stages)
    reg.setup(dict(keypoint_names=model.keypoint_names))
    # Started near the truth (the leaf rotations now move their markers: from the rest
    # pose this problem has local minima), LM converges to it only with exact Jacobians.
    start = {k: v + 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype)
             for k, v in truth.items()}
    result = reg.fit(obs, init_params=dict(keypoint_offsets=offsets.expand(B, -1, -1), **start))
    fitted = reg.handlers['kp2d'].points(result.output, result.params)
    assert float((fitted - points).norm(dim=-1).max()) / length < 1e-9
    world = SMILRegistrant(body_model=model, init='zeros', stages=stages,
                           handlers=[dict(handler, offsets_frame='world')])
    world.setup(dict(keypoint_names=model.keypoint_names))
    wrong = world.fit(obs, init_params=dict(keypoint_offsets=offsets.expand(B, -1, -1), **start))
    assert float((world.handlers['kp2d'].points(wrong.output, wrong.params) - points).norm(
        dim=-1).max()) / length > 1e-3
    # the first-order term of the linearisation is half the cost's gradient, with a
    # second point handler (3D joints, no offsets) reading the pool beside it
    h = reg.handlers['kp2d']
    h3 = HANDLERS.build(dict(type='Keypoint3DHandler', name='k3', source='joints'))
    h3.setup(model, dict(keypoint_names=model.joint_names))
    obs['keypoints_3d'] = out.joints + torch.randn(out.joints.shape, generator=g,
                                                   dtype=torch.float64)
    params = dict(global_orient=0.1 * truth['global_orient'], transl=torch.zeros(B, 3,
                  dtype=torch.float64), body_pose=0.5 * truth['body_pose'],
                  keypoint_offsets=offsets.expand(B, -1, -1))

    def cost_fn(p, o):
        output = model(**{k: v for k, v in p.items() if k != 'keypoint_offsets'},
                       return_vertices=False)
        return h(output, o, p) + h3(output, o, p)
    fitted_names = ['global_orient', 'transl', 'body_pose']
    problem = LeastSquaresProblem(model, [h, h3], obs, params, fitted_names, cost_fn)
    x = problem.initial_x().requires_grad_(True)
    idx = torch.arange(B)
    cost, grad, _ = problem.linearize(x.detach(), idx)
    auto = torch.autograd.grad(problem.cost(x, idx).sum(), x)[0]
    torch.testing.assert_close(cost, problem.cost(x.detach(), idx))
    torch.testing.assert_close(2 * grad, auto, rtol=1e-8, atol=1e-8)


def test_linear_prior_jacobians_are_computed_once_per_stage(model, monkeypatch):
    """The shape prior and the L2 pose prior are affine in their parameters: LM takes
    their Jacobians once per stage (not every iteration), with the same fit, and without
    ``torch.func`` (whose first use in a process costs about a second)."""
    from smilfit.handlers.pose_prior import PosePriorHandler
    from smilfit.handlers.shape_prior import ShapePriorHandler
    obs, _, _ = _problem(model, 3, noise=1.0)
    handlers = [dict(type='Keypoint2DHandler', name='kp2d', source='joints'),
                dict(type='ShapePriorHandler', name='shape', weight=1e-2),
                dict(type='PosePriorHandler', name='pose', weight=50.0)]
    calls, once = [], []
    jacrev = torch.func.jacrev
    constant = residual_blocks.ParamResidualJacobians.constant_jacobian

    def counting(*args, **kwargs):
        calls.append(1)
        return jacrev(*args, **kwargs)

    def counting_once(*args, **kwargs):
        once.append(1)
        return constant(*args, **kwargs)
    monkeypatch.setattr(torch.func, 'jacrev', counting)
    monkeypatch.setattr(residual_blocks.ParamResidualJacobians, 'constant_jacobian',
                        counting_once)
    # (rows differentiated in several backward passes too)
    monkeypatch.setattr(residual_blocks, 'JACOBIAN_ROWS_PER_PASS', 7)
    cached = _registrant(model, n_iter=10, handlers=handlers).fit(obs)
    assert len(once) == 2 and not calls       # one per prior for the whole stage
    assert cached.history[0]['steps'] > 2
    calls.clear()
    for cls in (PosePriorHandler, ShapePriorHandler):
        monkeypatch.setattr(cls, 'affine_param_residuals', property(lambda self: False))
    every = _registrant(model, n_iter=10, handlers=handlers).fit(obs)
    assert len(calls) > 2 * 2
    for k in ('global_orient', 'body_pose', 'betas', 'transl'):
        torch.testing.assert_close(cached.params[k], every.params[k])


@pytest.mark.parametrize('solver', ['sparse', 'split'])
def test_columns_no_keypoint_reads_are_solved_apart_with_the_same_fit(model, monkeypatch,
                                                                    solver):
    """Joints below which no keypoint lies (an unlabelled tail) have only their L2 pose
    prior: their columns are separable. The sparse factorisation of the tree ('sparse')
    or a division for them and a dense factorisation of the rest ('split') give the same
    fit as one dense factorisation of the whole system."""
    if solver == 'split':
        monkeypatch.setattr(linear_solver, 'SPARSE_MAX_FLOP_FRACTION', -1.0)
    names = [n for n in model.joint_names if not n.startswith('tail')]
    keep = [model.joint_names.index(n) for n in names]
    obs, _, _ = _problem(model, 3, noise=1.0)
    obs['keypoints_2d'] = obs['keypoints_2d'][:, :, keep]
    obs['confidence'] = obs['confidence'][:, :, keep]
    handlers = [dict(type='Keypoint2DHandler', name='kp2d', source='joints'),
                dict(type='ShapePriorHandler', name='shape', weight=1e-2),
                dict(type='PosePriorHandler', name='pose', weight=1.0)]
    seen = {}
    layouts = []
    linearize = problem_module.LeastSquaresProblem.linearize

    def recording_layout(problem, *args, **kwargs):
        seen['problem'] = problem
        out = linearize(problem, *args, **kwargs)
        layouts.append(out[2].dim())
        return out
    monkeypatch.setattr(problem_module.LeastSquaresProblem, 'linearize', recording_layout)

    def fit():
        reg = _registrant(model, n_iter=15, handlers=handlers)
        reg.setup(dict(keypoint_names=names))
        return reg.fit(obs)
    apart = fit()
    # the layout is chosen inside the first linearisation: a sparse plan's H is packed
    # (n, width) from the first one on
    assert set(layouts) == ({2} if solver == 'sparse' else {3})
    monkeypatch.setattr(problem_module.LeastSquaresProblem, 'linearize', linearize)
    problem = seen['problem']
    mask = problem.separable_columns()
    plan = linear_solver.plan_linear_solver(problem.column_coupling())
    assert isinstance(problem.solver, type(plan))
    assert isinstance(plan, linear_solver.SeparableSplit if solver == 'split'
                      else linear_solver.SparseCholesky)
    # the tail's joints (body_pose columns 6 + 3 * (joint - 1)) and the leaves (their
    # rotation moves no joint) are separable; the root, translation and shape are not
    for j, name in enumerate(model.joint_names[1:], start=1):
        cols = mask[6 + 3 * (j - 1):6 + 3 * j]
        leaf = j not in model.parents.tolist()
        assert bool(cols.all()) == (name.startswith('tail') or leaf), name
    assert not bool(mask[:6].any()) and not bool(mask[6 + 3 * (model.num_joints - 1):].any())
    # structurally separable columns are numerically so at another point too
    x = problem.initial_x() + 0.3 * torch.randn(problem.B, mask.numel(), dtype=torch.float64)
    problem.solver = linear_solver.DenseCholesky()     # H as (B, P, P) matrices
    _, _, H = problem.linearize(x, torch.arange(problem.B))
    off = H[:, mask][:, :, ~mask]
    assert float(off.abs().max()) == 0.0
    monkeypatch.setattr(problem_module, 'plan_linear_solver',      # one factorisation
                        lambda coupling, device: linear_solver.DenseCholesky())
    whole = fit()
    # The same trajectory; the last iterations stop at rounding-level decisions (ftol
    # 1e-15), which two factorisations of different systems can take steps apart: what
    # the longer run does after the shorter one stopped gains nothing above rounding.
    steps = [r.history[0]['steps'] for r in (apart, whole)]
    traces = [torch.as_tensor(r.history[0]['loss_trace']) for r in (apart, whole)]
    n = min(steps)
    assert n >= 5
    torch.testing.assert_close(traces[0][:n], traces[1][:n], rtol=1e-9, atol=0.0)
    longer = traces[int(steps[1] > steps[0])]
    assert float(longer[n - 1] - longer[-1]) <= 1e-9 * float(longer[n - 1])
    for k in ('global_orient', 'body_pose', 'betas', 'transl'):
        torch.testing.assert_close(apart.params[k], whole.params[k], rtol=1e-5, atol=1e-6)


def test_a_failed_factorisation_raises_the_damping_instead_of_stopping(model, monkeypatch):
    """A damped system that is not positive definite (possible in float32) rejects the
    step and tries again with more damping; it does not end the sample's fit."""
    obs, _, _ = _problem(model, 2, noise=1.0)
    reference = _registrant(model, n_iter=12).fit(obs)
    plan = linear_solver.plan_linear_solver
    calls = []

    def failing_plan(coupling, device):
        solver = plan(coupling, device)
        solve = solver.solve

        def failing_first(*args):
            step, info, curvature = solve(*args)
            calls.append(1)
            if len(calls) == 1:  # as LAPACK reports it: garbage factor, info > 0
                return step * float('nan'), torch.ones_like(info), curvature * float('nan')
            return step, info, curvature
        solver.solve = failing_first
        return solver
    monkeypatch.setattr(problem_module, 'plan_linear_solver', failing_plan)
    retried = _registrant(model, n_iter=13).fit(obs)
    assert len(calls) > 2
    assert retried.history[0]['steps'] > 2
    torch.testing.assert_close(retried.total_loss, reference.total_loss, rtol=1e-3, atol=1e-6)


def test_float32_stages_stop_when_converged():
    """Float32 rounding noise in the cost (~1e-7 relative) must not keep a converged
    sample iterating to n_iter: a float32 fit stops within a few steps of the float64
    one, at the same loss."""
    m64 = SMILModel(data=demo_model_data(), dtype=torch.float64)
    m32 = SMILModel(data=demo_model_data(), dtype=torch.float32)
    obs, _, _ = _problem(m64, 8, noise=1.0)
    obs32 = {k: (v.float() if v.is_floating_point() else v) for k, v in obs.items()}
    ref = _registrant(m64, n_iter=100, stopping=(1e-8, 1e-7)).fit(obs)
    fit = _registrant(m32, n_iter=100, stopping=(1e-8, 1e-7)).fit(obs32)
    assert ref.history[0]['steps'] < 30
    assert fit.history[0]['steps'] <= ref.history[0]['steps'] + 5
    torch.testing.assert_close(fit.total_loss.double(), ref.total_loss, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize('cols', [[2, 3, 4], [5, 1, 3]])
@pytest.mark.parametrize('constant', [False, True, 'diagonal'])
def test_param_blocks_add_jt_j_and_jt_r_at_their_columns(cols, constant):
    """``add_param_block`` puts ``J^T J`` and ``J^T r`` of one handler's parameter
    residuals at its columns (one run of columns through slices, others through indices),
    for a per-sample Jacobian, a linear prior's constant one and a per-sample diagonal one
    (an independent prior per component), and nowhere else."""
    torch.manual_seed(0)
    n, R, P = 4, 5, 7
    cols = torch.tensor(cols)
    if constant == 'diagonal':
        R = cols.numel()
    r = torch.randn(n, R, dtype=torch.float64)
    if constant == 'diagonal':
        values = torch.randn(n, R, dtype=torch.float64)
        jac, dense = DiagonalJacobian(values, cols), torch.diag_embed(values)
    elif constant:
        matrix = torch.randn(R, cols.numel(), dtype=torch.float64)
        jac, dense = ConstantJacobian(matrix, cols), matrix.expand(n, R, -1)
    else:
        jac = dense = torch.randn(n, R, cols.numel(), dtype=torch.float64)
    H0 = torch.randn(n, P, P, dtype=torch.float64)
    g0 = torch.randn(n, P, dtype=torch.float64)
    H, g = H0.clone(), g0.clone()
    add_param_block(H, g, r, jac, cols)
    full = torch.zeros(n, R, P, dtype=torch.float64)
    full[:, :, cols] = dense
    assert torch.allclose(H, H0 + full.transpose(1, 2) @ full)
    assert torch.allclose(g, g0 + torch.einsum('nrp,nr->np', full, r))
    # packed (the sparse factorisation's layout): the same entries of the upper triangle
    from smilfit.ops.sparse_cholesky import SparseCholeskyPlan
    plan = SparseCholeskyPlan.build(torch.ones(P, P, dtype=torch.bool))
    Hp, gp = plan.pack(H0), g0.clone()
    add_param_block(Hp, gp, r, jac, cols, slots=plan.slot_map())
    torch.testing.assert_close(Hp[:, :-1], plan.pack(H)[:, :-1])
    torch.testing.assert_close(gp, g)
    H2, g2 = H0.clone(), g0.clone()
    add_param_block(H2, g2, r, jac, None)           # no fitted columns: nothing
    assert torch.equal(H2, H0) and torch.equal(g2, g0)
    empty = torch.zeros(0, dtype=torch.long)        # e.g. K = 0 shape coefficients
    add_param_block(H2, g2, r, ConstantJacobian(r.new_zeros(R, 0), empty), empty)
    assert torch.equal(H2, H0) and torch.equal(g2, g0)
    group = torch.tensor([0, 1, 0, 1])              # summed per group (a shared stage)
    Hg, gg = torch.zeros(2, P, P, dtype=torch.float64), g0.clone()
    add_param_block(Hg, gg, r, jac, cols, reduce=(group, 2))
    per_sample = full.transpose(1, 2) @ full
    torch.testing.assert_close(Hg, torch.stack([per_sample[group == k].sum(0) for k in (0, 1)]))
    torch.testing.assert_close(gg, g)


def test_trial_points_are_linearised_while_steps_are_accepted(model, monkeypatch):
    """While most steps are accepted, the trial point is linearised in the same pass
    as its cost (no second pass after acceptance): fewer passes, the same fit."""
    obs, _, _ = _problem(model, 3, noise=1.0)
    calls = {'cost': 0, 'linearize': 0}
    for name in calls:
        original = getattr(problem_module.LeastSquaresProblem, name)

        def counting(problem, *args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(problem, *args, **kwargs)
        monkeypatch.setattr(problem_module.LeastSquaresProblem, name, counting)

    def fit():
        calls.update(cost=0, linearize=0)
        result = _registrant(model, n_iter=12, stopping=(1e-10, 1e-10)).fit(obs)
        return result, dict(calls)
    merged, merged_calls = fit()
    monkeypatch.setattr(lm, 'LINEARIZE_TRIALS_MIN_ACCEPTANCE', 2.0)   # never
    apart, apart_calls = fit()
    steps = merged.history[0]['steps']
    assert steps == apart.history[0]['steps'] >= 4
    # apart: a cost per trial and a linearisation per accepted step (plus the start,
    # whose linearisation also gives the stage's starting loss: no cost pass);
    # merged: most trials linearised directly
    assert apart_calls['cost'] == steps
    assert merged_calls['cost'] + merged_calls['linearize'] < (
        apart_calls['cost'] + apart_calls['linearize'] - steps // 2)
    torch.testing.assert_close(torch.as_tensor(merged.history[0]['loss_trace']),
                               torch.as_tensor(apart.history[0]['loss_trace']),
                               rtol=1e-9, atol=0.0)
    for k in ('global_orient', 'body_pose', 'betas', 'transl'):
        torch.testing.assert_close(merged.params[k], apart.params[k], rtol=1e-7, atol=1e-9)


def test_skipped_samples_are_never_evaluated(model, monkeypatch):
    """A coarse stage's samples that start near the answer (``fit(near=...)``) cost the
    solver nothing: no linearisation or cost pass ever includes them."""
    obs, _, _ = _problem(model, 4, noise=1.0)
    seen = []
    for name in ('cost', 'linearize'):
        original = getattr(problem_module.LeastSquaresProblem, name)

        def recording(problem, x, idx, *args, _original=original, **kwargs):
            seen.append(idx.clone())
            return _original(problem, x, idx, *args, **kwargs)
        monkeypatch.setattr(problem_module.LeastSquaresProblem, name, recording)
    reg = _registrant(model, n_iter=8, coarse=True)
    near = torch.tensor([False, True, True, False])
    result = reg.fit(obs, near=near)
    assert result.history[0]['steps'] >= 2 and seen
    assert not any(bool(near[idx].any()) for idx in seen)
