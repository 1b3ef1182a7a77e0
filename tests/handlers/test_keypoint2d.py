"""Keypoint2DHandler on a toy model seen by two cameras."""
import pytest
import torch

from smilfit.cameras import project_points
from smilfit.handlers import Keypoint2DHandler, project_with_depth
from smilfit.registry import HANDLERS

from .helpers import (DATA_INFO, DATA_NAMES, DT, forward, observe, random_params, rot_y,
                      toy_model)


@pytest.fixture(scope='module')
def model():
    return toy_model()


def handler(model, **kw):
    h = HANDLERS.build(dict(type='Keypoint2DHandler', name='kp2d', **kw))
    h.setup(model, DATA_INFO)
    return h


@pytest.mark.parametrize('batched', [True, False])
@pytest.mark.parametrize('robust', [None, 'gmof'])
def test_zero_at_truth_positive_otherwise(model, batched, robust):
    params = random_params(model, 4)
    obs = observe(model, params, batched_cameras=batched)
    h = handler(model, loss=dict(type='KeypointMSELoss', robust=robust, sigma=30.0))
    loss = h(forward(model, params), obs, params)
    assert loss.shape == (4,)
    assert torch.all(loss.abs() < 1e-12)
    for key, delta in (('body_pose', 0.1), ('transl', 0.05), ('global_orient', 0.1),
                       ('betas', 0.5)):
        wrong = dict(params, **{key: params[key] + delta})
        loss = h(forward(model, wrong), obs, wrong)
        assert torch.all(loss > 1e-6), key


def test_shared_and_batched_cameras_agree(model):
    params = random_params(model, 3)
    wrong = dict(params, body_pose=params['body_pose'] * 0.5)
    out = forward(model, wrong)
    h = handler(model)
    a = h(out, observe(model, params, batched_cameras=True), wrong)
    b = h(out, observe(model, params, batched_cameras=False), wrong)
    torch.testing.assert_close(a, b)


def test_matches_hand_computed_loss(model):
    """The loss is sum over views/keypoints of conf * |proj - obs|^2 (plain MSE)."""
    params = random_params(model, 2)
    obs = observe(model, params)
    wrong = dict(params, transl=params['transl'] + 0.1)
    out = forward(model, wrong)
    proj = project_points(out.keypoints[:, None], obs['K'], obs['R'], obs['t'], obs['dist'])
    expected = torch.zeros(2, dtype=DT)
    names = model.keypoint_names
    from .helpers import LOOKUP
    for i, n in enumerate(names):
        j = DATA_NAMES.index(LOOKUP[n])
        expected += ((proj[:, :, i] - obs['keypoints_2d'][:, :, j]) ** 2).sum((-1, -2))
    h = handler(model)
    torch.testing.assert_close(h(out, obs, wrong), expected)


def test_nan_observations_finite_loss_and_gradients(model):
    params = {k: v.clone().requires_grad_(True) for k, v in random_params(model, 3).items()}
    obs = observe(model, {k: v.detach() for k, v in params.items()})
    obs['keypoints_2d'][0, 0, 1] = float('nan')     # one missing detection
    obs['keypoints_2d'][1] = float('nan')           # a sample with nothing observed
    obs['confidence'][2, 1, 3] = float('nan')       # a NaN confidence
    obs['visible'][0, 1, 4] = False
    wrong = dict(params, body_pose=params['body_pose'] + 0.1)
    h = handler(model, loss=dict(type='KeypointMSELoss', robust='gmof', sigma=10.0))
    loss = h(forward(model, wrong), obs, wrong)
    assert torch.isfinite(loss).all()
    assert loss[1] == 0 and loss[0] > 0 and loss[2] > 0
    loss.sum().backward()
    for k, v in params.items():
        assert torch.isfinite(v.grad).all(), k
    assert torch.all(params['body_pose'].grad[1] == 0)


def test_points_behind_camera_score_as_far_misses_with_finite_gradients(model):
    params = random_params(model, 2)
    obs = observe(model, params)
    # move sample 0 behind both cameras (and onto camera 0's plane for one point)
    transl = params['transl'].clone()
    transl[0] = torch.tensor([0.0, 0.0, -40.0], dtype=DT)
    moved = dict(params, transl=transl.requires_grad_(True))
    h = handler(model)
    loss = h(forward(model, moved), obs, moved)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(moved['transl'].grad).all()
    # behind the camera never scores better than in front: each detected point costs
    # what a detection BEHIND_CAMERA_PX away would (GMoF: its saturation sigma^2)
    from smilfit.handlers.keypoint2d import BEHIND_CAMERA_PX
    robust = HANDLERS.build(dict(type='Keypoint2DHandler', name='kp', source='joints',
                                 use_confidence=False,
                                 loss=dict(type='KeypointMSELoss', robust='gmof', sigma=5.0)))
    robust.setup(model, dict(keypoint_names=model.joint_names))
    out = forward(model, moved)
    behind = robust(out, obs, moved)[0].detach()
    _, front = robust.project(out, obs, moved)
    n_behind = int((~front[0] & torch.isfinite(obs['keypoints_2d'][0]).all(-1)).sum())
    assert n_behind > 0
    saturated = 25.0 * (2 * BEHIND_CAMERA_PX ** 2) / (25.0 + 2 * BEHIND_CAMERA_PX ** 2)
    assert float(behind) >= n_behind * saturated - 1e-6
    assert float(behind) > float(robust(forward(model, params), obs, params)[0].detach())
    pts = torch.tensor([[[0.0, 0.0, -15.0], [0.0, 0.0, -20.0], [1.0, 0.0, 0.0]]], dtype=DT,
                       requires_grad=True)
    K, R, t = obs['K'][0, 0], obs['R'][0, 0], obs['t'][0, 0]
    pix, front = project_with_depth(pts, K, R, t, None)
    assert front.tolist() == [[False, False, True]]
    pix.sum().backward()
    assert torch.isfinite(pix).all() and torch.isfinite(pts.grad).all()
    torch.testing.assert_close(pix[:, 2], project_points(pts, K, R, t)[:, 2])


def test_projections_are_not_clamped(model):
    """A point far outside the image still pulls with its full residual."""
    params = random_params(model, 1)
    obs = observe(model, params)
    far = dict(params, transl=params['transl'] + torch.tensor([[0.0, 30.0, 0.0]], dtype=DT))
    h = handler(model)
    pix, front = h.project(forward(model, far), obs, far)
    assert front.all()
    assert pix[..., 1].min() > 480 * 2          # far outside a 480-pixel-high image
    loss = h(forward(model, far), obs, far)
    expected = ((pix - h.select_data(obs['keypoints_2d'], 2)) ** 2).sum()
    torch.testing.assert_close(loss.sum(), expected)


def test_offsets_shift_projections(model):
    params = random_params(model, 2)
    obs = observe(model, params)
    out = forward(model, params)
    h = handler(model)
    Kp = len(model.keypoint_names)
    offsets = torch.zeros(1, Kp, 3, dtype=DT)
    i = model.keypoint_names.index('tip')
    offsets[0, i] = torch.tensor([0.3, -0.2, 0.1], dtype=DT)
    with_off = dict(params, keypoint_offsets=offsets)
    p0, _ = h.project(out, obs, params)
    p1, _ = h.project(out, obs, with_off)
    m = h.match.model_names.index('tip')
    moved = (p1 - p0).abs().sum(-1)                 # (B, C, M)
    assert torch.all(moved[..., m] > 1.0)
    assert torch.all(torch.cat([moved[..., :m], moved[..., m + 1:]], -1) == 0)
    expected = project_points((out.keypoints + offsets)[:, None], obs['K'], obs['R'],
                              obs['t'], obs['dist'])[:, :, i]
    torch.testing.assert_close(p1[:, :, m], expected)
    assert h(out, obs, with_off).min() > 0          # truth without the offset
    # per-sample offsets (B, Kp, 3) and gradients reach them
    per = offsets.expand(2, -1, -1).clone().requires_grad_(True)
    h(out, obs, dict(params, keypoint_offsets=per)).sum().backward()
    assert per.grad[:, i].abs().sum() > 0
    with pytest.raises(ValueError, match='keypoint_offsets'):
        h(out, obs, dict(params, keypoint_offsets=torch.zeros(2, Kp + 1, 3, dtype=DT)))


def test_per_sample_independence(model):
    params = random_params(model, 3)
    obs = observe(model, params)
    wrong = dict(params, body_pose=params['body_pose'] + 0.05)
    out = forward(model, wrong)
    h = handler(model, loss=dict(type='KeypointMSELoss', robust='gmof', sigma=5.0))
    base = h(out, obs, wrong)
    obs2 = {k: v.clone() for k, v in obs.items()}
    obs2['keypoints_2d'][1] += 37.0
    obs2['confidence'][1] *= 0.3
    obs2['K'][1, 0, 0, 0] *= 2.0
    obs2['view_valid'][1, 0] = False
    changed = h(out, obs2, wrong)
    assert changed[0] == base[0] and changed[2] == base[2]
    assert changed[1] != base[1]


def test_masks_view_valid_and_confidence(model):
    params = random_params(model, 2)
    obs = observe(model, params)
    wrong = dict(params, transl=params['transl'] + 0.1)
    out = forward(model, wrong)
    h = handler(model)
    full = h(out, obs, wrong)
    o = {k: v.clone() for k, v in obs.items()}
    o['view_valid'][:, 1] = False
    only0 = h(out, o, wrong)
    o['view_valid'][:, 0] = False
    assert torch.all(h(out, o, wrong) == 0)
    o = {k: v.clone() for k, v in obs.items()}
    o['view_valid'][:, 0] = False
    only1 = h(out, o, wrong)
    torch.testing.assert_close(only0 + only1, full)
    o = {k: v.clone() for k, v in obs.items()}
    o['confidence'] *= 2.0
    torch.testing.assert_close(h(out, o, wrong), 2 * full)
    h_noconf = handler(model, use_confidence=False)
    torch.testing.assert_close(h_noconf(out, o, wrong), full)


def test_keypoint_weights_scale_terms(model):
    params = random_params(model, 2)
    obs = observe(model, params)
    wrong = dict(params, transl=params['transl'] + 0.1)
    out = forward(model, wrong)
    all_w = handler(model, keypoint_weights={n: 3.0 for n in model.keypoint_names})
    torch.testing.assert_close(all_w(out, obs, wrong), 3.0 * handler(model)(out, obs, wrong))
    only = handler(model, keypoints=['head'])
    w = handler(model, keypoint_weights={'head': 2.0})
    torch.testing.assert_close(w(out, obs, wrong) - handler(model)(out, obs, wrong),
                               only(out, obs, wrong))


def test_joint_source(model):
    params = random_params(model, 2)
    obs = observe(model, params)
    # the data's D_head is joint j1: match joints through a joint-name lookup
    h = Keypoint2DHandler('kpj', source='joints', joint_lookup={'j1': 'D_head', 'j2': 'D_neck'})
    h.setup(model, DATA_INFO)
    assert h.match.model_names == ['j1', 'j2']
    assert h(forward(model, params), obs, params).abs().max() < 1e-12


def test_fitted_cameras_override_observed(model):
    params = random_params(model, 2)
    obs = observe(model, params)
    out = forward(model, params)
    h = handler(model)
    # perturb the observed cameras; the fitted (true) ones in params win
    bad = dict(obs, t=obs['t'] + 1.0)
    fitted = dict(params, camera_R=obs['R'], camera_t=obs['t'])
    assert h(out, bad, params).min() > 0
    assert h(out, bad, fitted).abs().max() < 1e-12
    # axis-angle camera rotations, shared rig (1, C, ...)
    aa = torch.tensor([[[0.0, 0.0, 0.0], [0.0, torch.pi / 2, 0.0]]], dtype=DT)
    shared = dict(params, camera_R=aa, camera_t=obs['t'][:1])
    torch.testing.assert_close(rot_y(90.0), obs['R'][0, 1])
    assert h(out, bad, shared).abs().max() < 1e-9


def test_single_view_squeezed_layout(model):
    params = random_params(model, 2)
    obs = observe(model, params)
    wrong = dict(params, transl=params['transl'] + 0.1)
    out = forward(model, wrong)
    h = handler(model)
    view1 = {k: v[:, 1:2] for k, v in obs.items() if k not in ('keypoints_3d',)}
    squeezed = {k: v[:, 0] for k, v in view1.items()}
    a = h(out, view1, wrong)
    torch.testing.assert_close(h(out, squeezed, wrong), a)
    shared_cams = dict(squeezed, **{k: squeezed[k][0] for k in ('K', 'R', 't', 'dist')})
    torch.testing.assert_close(h(out, shared_cams, wrong), a)


def test_bad_shapes_are_reported(model):
    params = random_params(model, 2)
    obs = observe(model, params)
    out = forward(model, params)
    h = handler(model)
    with pytest.raises(KeyError, match='keypoints_2d'):
        h(out, {k: v for k, v in obs.items() if k != 'keypoints_2d'}, params)
    with pytest.raises(ValueError, match="camera 'K'"):
        h(out, dict(obs, K=obs['K'][:, :1]), params)
    with pytest.raises(ValueError, match='samples'):
        h(out, {k: v[:1] for k, v in obs.items()}, params)


def test_float32_model_with_float64_cameras():
    m64, m32 = toy_model(), toy_model().to(torch.float32)
    params = random_params(m64, 2)
    obs = observe(m64, params)                      # float64 cameras, as read from HDF5
    obs32 = dict(obs, keypoints_2d=obs['keypoints_2d'].float(),
                 confidence=obs['confidence'].float())
    p32 = {k: v.float() for k, v in params.items()}
    h = handler(m32)
    loss = h(forward(m32, p32), obs32, p32)
    assert loss.dtype == torch.float32 and loss.abs().max() < 1e-2


def test_joint_handlers_ignore_keypoint_offsets_by_default(model):
    params = random_params(model, 2)
    obs = observe(model, params)
    out = forward(model, params)
    h = Keypoint2DHandler('kpj', source='joints', joint_lookup={'j1': 'D_head'})
    h.setup(model, DATA_INFO)
    off = torch.ones(1, len(model.keypoint_names), 3, dtype=DT)
    assert h(out, obs, dict(params, keypoint_offsets=off)).abs().max() < 1e-12
    h = Keypoint2DHandler('kpj', source='joints', joint_lookup={'j1': 'D_head'},
                          offsets_key='joint_offsets')
    h.setup(model, DATA_INFO)
    joint_off = torch.zeros(1, model.num_joints, 3, dtype=DT)
    joint_off[0, 1, 1] = 0.2
    assert h(out, obs, dict(params, joint_offsets=joint_off)).min() > 0


def test_joint_frame_offsets_turn_and_scale_with_the_body(model):
    """``offsets_frame='joint'``: the offset is seen through the carrying joint's world
    map, so a rotated and scaled body carries its markers along; world-frame offsets stay."""
    params = random_params(model, 2)
    obs = observe(model, params)
    Kp = len(model.keypoint_names)
    g = torch.Generator().manual_seed(3)
    offsets = 0.2 * torch.randn(1, Kp, 3, generator=g, dtype=DT)
    h = handler(model, offsets_frame='joint')
    world = handler(model)
    at_rest = dict(global_orient=torch.zeros(1, 3, dtype=DT))
    rest_out = forward(model, at_rest)
    # turned by 90 degrees about y and scaled x2 about the root: offsets turn and double
    turned = dict(global_orient=torch.tensor([[0.0, torch.pi / 2, 0.0]], dtype=DT))
    out = model(**turned, global_log_scale=torch.tensor([[0.6931471805599453]], dtype=DT),
                return_vertices=False)
    p = dict(keypoint_offsets=offsets)
    moved = h.points(out, p) - out.keypoints
    torch.testing.assert_close(moved, 2.0 * offsets @ rot_y(90).T)
    torch.testing.assert_close(world.points(out, p) - out.keypoints, offsets)
    torch.testing.assert_close(h.points(rest_out, p) - rest_out.keypoints,
                               world.points(rest_out, p) - rest_out.keypoints)
    # the loss path sees them (and only the world path adds world offsets in offset_points)
    out = forward(model, params)
    assert h(out, obs, dict(params, keypoint_offsets=offsets)).min() > 0
    pts = out.keypoints.index_select(1, h.model_index)
    assert torch.equal(h.offset_points(pts, p), pts)
    torch.testing.assert_close(h.local_offsets(p), offsets.index_select(1, h.model_index))
    assert world.local_offsets(p) is None
    with pytest.raises(ValueError, match='offsets_frame'):
        Keypoint2DHandler('bad', offsets_frame='bone')


def test_observation_terms_follow_in_place_edits(model):
    """The parts that depend on the observations only are computed once per observation
    tensors; editing those tensors in place (or passing new ones) is seen at once."""
    params = random_params(model, 2)
    obs = observe(model, params)
    wrong = dict(params, transl=params['transl'] + 0.1)
    out = forward(model, wrong)
    h = handler(model, loss=dict(type='KeypointMSELoss', robust='gmof', sigma=50.0))
    points = h.matched_points(out, wrong)
    first = h(out, obs, wrong)
    r0, _ = h.point_residuals_and_jacobian(points, obs, wrong)
    torch.testing.assert_close((r0 * r0).sum((1, 2, 3)), first)
    obs['keypoints_2d'][:, 0] += 5.0
    obs['confidence'][:, 1] *= 0.5
    fresh = handler(model, loss=dict(type='KeypointMSELoss', robust='gmof', sigma=50.0))
    expected = fresh(out, obs, wrong)
    assert not torch.allclose(expected, first)
    torch.testing.assert_close(h(out, obs, wrong), expected)
    r1, _ = h.point_residuals_and_jacobian(points, obs, wrong)
    torch.testing.assert_close((r1 * r1).sum((1, 2, 3)), expected)
    moved = {k: v.clone() for k, v in obs.items()}
    moved['keypoints_2d'][:, 1] -= 3.0
    torch.testing.assert_close(h(out, moved, wrong), fresh(out, moved, wrong))
