"""The leverage of every view's point on its sample's fit (what the noise scales are
studentized by): the diagonal of the hat matrix ``J H^-1 J^T`` of the keypoint rows, so
over all of a sample's rows it sums to the parameters the labels determine, and it is
handed from a stage of frames to the next stage's noise scales."""
import pytest
import torch

from smilfit.body_models import SMILModel, demo_model_data
from smilfit.handlers.keypoint2d import Keypoint2DHandler
from smilfit.registrants.solver import linear_solver
from smilfit.registrants.solver import problem as problem_module
from smilfit.registrants.solver.leverage import point_leverage
from smilfit.registry import HANDLERS

from .test_levenberg_marquardt import _problem, _registrant
from .test_posterior_variance import last_problem


@pytest.fixture(scope='module')
def model():
    return SMILModel(data=demo_model_data(), dtype=torch.float64)


def _last_problem(model, monkeypatch, handlers, fit):
    obs, _, _ = _problem(model, 3, noise=1.0, views=2)
    return last_problem(monkeypatch, _registrant(model, n_iter=3, handlers=handlers, fit=fit),
                        obs)


def _leverage_and_information(problem, handler_name):
    x = problem.initial_x()
    idx = torch.arange(problem.B)
    problem.solver = linear_solver.DenseCholesky()
    _, _, H = problem.linearize(x, idx)
    covariance = torch.linalg.inv(H)
    handler = next(h for h in problem.handlers if h.name == handler_name)
    return point_leverage(problem, x, idx, covariance, [handler])[handler_name], H, covariance


def test_the_leverages_of_labels_alone_sum_to_the_parameters(model, monkeypatch):
    """With the labels the only terms, ``H = J^T J`` and the hat matrix's trace over a
    sample's rows is its number of parameters: each leverage (a mean over a label's two
    rows) lies in [0, 1] and twice their sum is P (the body's place and turn: a leaf
    joint's rotation moves no joint, and the pose alone is singular)."""
    problem = _last_problem(model, monkeypatch,
                            [dict(type='Keypoint2DHandler', name='kp2d', source='joints')],
                            ('global_orient', 'transl'))
    leverage, H, _ = _leverage_and_information(problem, 'kp2d')
    P = H.shape[-1]
    assert leverage.shape == (problem.B, 2, model.num_joints)
    assert (leverage >= -1e-9).all() and (leverage <= 1 + 1e-9).all()
    torch.testing.assert_close(2 * leverage.sum((1, 2)),
                               torch.full((problem.B,), float(P), dtype=torch.float64))


def test_a_prior_takes_its_share_of_the_leverage(model, monkeypatch):
    """With a prior the labels' leverages sum to ``P - trace(H^-1 H_prior)``: what the
    prior decides, the labels do not."""
    handlers = [dict(type='Keypoint2DHandler', name='kp2d', source='joints'),
                dict(type='PosePriorHandler', name='pose', weight=30.0)]
    problem = _last_problem(model, monkeypatch, handlers,
                            ('global_orient', 'transl', 'body_pose'))
    leverage, H, covariance = _leverage_and_information(problem, 'kp2d')
    prior_only = problem_module.LeastSquaresProblem(
        problem.model, [h for h in problem.handlers if h.name == 'pose'], problem.obs,
        problem.fixed, problem.fitted, problem.cost_fn, plan_solver=False)
    x, idx = problem.initial_x(), torch.arange(problem.B)
    _, _, H_prior = prior_only.linearize(x, idx)
    prior_share = torch.einsum('bij,bji->b', covariance, H_prior)
    assert bool((prior_share > 1.0).all())           # the prior decides something
    torch.testing.assert_close(2 * leverage.sum((1, 2)), H.shape[-1] - prior_share)


def test_studentized_noise_scales_grow_with_the_leverage():
    """A view's residuals divided by sqrt(1 - h): the view the fit follows more gets the
    larger correction, an unseen leverage none."""
    h = HANDLERS.build(dict(type='Keypoint2DHandler', name='kp', source='joints',
                            scale_from_residuals=True, min_relative_scale=0.0))
    assert h.leverage_key == 'kp.leverage'
    assert HANDLERS.build(dict(type='Keypoint2DHandler', name='kp', source='joints',
                               scale_from_residuals=True, studentize=False)).leverage_key \
        is None
    B, C, M = 1, 2, 5
    errors = torch.ones(B, C, M, dtype=torch.float64)
    valid = torch.ones(B, C, M, dtype=torch.bool)

    def scales(obs):
        # the handler's pixel terms, replaced by errors of 1 px in every point
        h._pixel_terms = lambda *a, **k: (errors[..., None] * torch.tensor([1.0, 0.0]),
                                          torch.zeros(B, C, M, 2, dtype=torch.float64),
                                          None, valid, valid)
        return h._noise_scales(None, obs, {}, None)
    plain = scales({})
    lev = torch.stack([torch.full((M,), 0.75), torch.full((M,), 0.0)])[None].double()
    studentized = scales({'kp.leverage': lev})
    ratio = studentized / plain
    # (each view's scale is shrunk towards the sample's, so not exactly 2 and 1)
    assert bool((ratio[0, 0] > 1.3).all() & (ratio[0, 1] >= 1.0).all())
    assert bool((ratio[0, 0] > ratio[0, 1]).all())
    assert torch.equal(scales({'kp.leverage': lev[:, :, :2]}), plain)   # not its shape


def test_a_stage_of_frames_hands_the_leverages_to_the_next_stages_noise_scales(
        model, monkeypatch):
    obs, _, _ = _problem(model, 3, noise=1.0, views=2)
    seen = []
    original = Keypoint2DHandler._noise_scales

    def recording(self, points, observations, *args, **kwargs):
        seen.append(observations.get(self.leverage_key))
        scales.append(observations.get(self.previous_scale_key))
        return original(self, points, observations, *args, **kwargs)
    scales = []
    monkeypatch.setattr(Keypoint2DHandler, '_noise_scales', recording)
    handlers = [dict(type='Keypoint2DHandler', name='kp2d', source='joints',
                     scale_from_residuals=True, scale_pooling='frame'),
                dict(type='PosePriorHandler', name='pose', weight=1.0)]
    reg = _registrant(model, n_iter=3, handlers=handlers,
                      fit=('global_orient', 'transl', 'body_pose'))
    reg.stages = reg.stages + [reg.stages[0]]
    reg.fit(obs)
    assert seen[0] is None                          # the first stage has no fit before it
    assert seen[-1] is not None and seen[-1].shape == (3, 2, model.num_joints)
    assert bool(((seen[-1] > 0) & (seen[-1] < 1)).all())
    # with the noise scales they were fitted with (which views weighed alike)
    assert scales[0] is None
    assert scales[-1] is not None and scales[-1].shape == seen[-1].shape
    assert bool((scales[-1] > 0).all())
