"""Noise scales from the residuals (smilfit.handlers.residual_scale) and the 2D keypoint
handler scoring errors in those units."""
import math
from types import SimpleNamespace

import pytest
import torch

from smilfit.handlers import Keypoint2DHandler
from smilfit.handlers.residual_scale import RAYLEIGH_MEDIAN, residual_scales


def _errors(sigmas, B=4, M=400, seed=0):
    """(B, C, M) norms of 2D Gaussian errors with one sigma per view."""
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(B, len(sigmas), M, 2, generator=g, dtype=torch.float64)
    return (e * torch.tensor(sigmas, dtype=torch.float64)[None, :, None, None]).norm(dim=-1)


def test_per_view_scales_recover_each_cameras_noise():
    """A camera 50x noisier than the others (a bad calibration) gets its own, large scale:
    little weight instead of its points being outliers of the others' scale."""
    e = _errors([1.0, 1.0, 2.0, 50.0])
    s = residual_scales(e, torch.ones_like(e, dtype=torch.bool))
    per_view = s[:, :, 0]
    assert torch.allclose(per_view[:, :3], torch.tensor([1.0, 1.0, 2.0], dtype=e.dtype),
                          rtol=0.12)
    assert torch.allclose(per_view[:, 3], torch.full((4,), 50.0, dtype=e.dtype), rtol=0.12)
    assert RAYLEIGH_MEDIAN == pytest.approx(math.sqrt(2 * math.log(2)))


def test_scales_follow_the_units_and_ignore_what_is_not_observed():
    e = _errors([1.0, 3.0], M=50)
    valid = torch.rand(e.shape, generator=torch.Generator().manual_seed(1)) > 0.3
    s = residual_scales(e, valid)
    # pixels x 10: scales x 10 (no pixel constant anywhere)
    assert torch.allclose(residual_scales(10 * e, valid), 10 * s, rtol=1e-10)
    # what is not observed does not count, whatever its value
    assert torch.equal(residual_scales(torch.where(valid, e, 1e6 * torch.ones_like(e)), valid), s)
    # nothing observed: a harmless 1; an exact fit: a positive, finite scale
    assert torch.equal(residual_scales(e, torch.zeros_like(valid)), torch.ones_like(e))
    exact = residual_scales(torch.zeros_like(e), valid)
    assert bool((exact > 0).all()) and bool(torch.isfinite(exact).all())


def test_a_view_with_few_points_is_shrunk_towards_the_sample():
    e = _errors([1.0, 1.0], M=200)
    valid = torch.ones_like(e, dtype=torch.bool)
    valid[:, 1, 1:] = False                       # view 1: one point
    e[:, 1, 0] = 20.0                             # ... far off
    s = residual_scales(e, valid)[:, :, 0]
    # one point alone would give 20 / 1.18 = 17: shrunk towards the sample's ~1, so the
    # point stays several scales off (an outlier for a robust kernel)
    assert bool((s[:, 1] < 0.2 * 20.0 / RAYLEIGH_MEDIAN).all())
    assert bool((s[:, 1] > 1.2).all())


def test_group_scales_keep_a_systematic_miss_per_keypoint():
    """In an animal's skeleton stage a keypoint the current skeleton misses in every
    frame (a label that is no joint) keeps a scale of its own size: it is not rejected
    as an outlier in every frame, so the skeleton can learn it. Groups do not mix."""
    e = _errors([1.0, 1.0], B=40, M=12)
    groups = torch.arange(40) % 2
    e[groups == 0, :, 5] += 20.0                  # animal 0 misses keypoint 5 everywhere
    valid = torch.ones_like(e, dtype=torch.bool)
    s = residual_scales(e, valid, groups)
    assert bool((s[groups == 0][:, :, 5] > 10.0).all())
    assert bool((s[groups == 1][:, :, 5] < 2.0).all())
    others = torch.ones(12, dtype=torch.bool)
    others[5] = False
    assert bool((s[:, :, others] < 2.0).all())
    # animal 1's scales do not depend on animal 0's errors
    e2 = e.clone()
    e2[groups == 0] *= 7.0
    assert torch.equal(residual_scales(e2, valid, groups)[groups == 1], s[groups == 1])
    # per sample (groups=None) the miss is an outlier of its frame: a small scale
    assert bool((residual_scales(e, valid)[groups == 0][:, :, 5] < 3.0).all())
    # ... and so is a point off in one frame only, within its group
    one = _errors([1.0, 1.0], B=40, M=12)
    one[0, 0, 3] = 30.0
    s1 = residual_scales(one, valid, groups)
    assert float(s1[0, 0, 3]) < 3.0
    # a group of one sample: a far point keeps a scale near its view's
    s2 = residual_scales(one[:1], valid[:1], torch.zeros(1, dtype=torch.long))
    assert float(s2[0, 0, 3]) < 0.25 * 30.0 / RAYLEIGH_MEDIAN


def _handler_and_data(**options):
    """A keypoint handler on a two-point 'model' seen by two cameras."""
    h = Keypoint2DHandler('kp', source='joints', scale_from_residuals=True,
                          loss=dict(type='KeypointMSELoss', robust='gmof', sigma=3.0),
                          **options)
    model = SimpleNamespace(joint_names=['a', 'b'], keypoint_names=[])
    h.setup(model, dict(keypoint_names=['a', 'b']))
    B, C = 3, 2
    K = torch.tensor([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]], dtype=torch.float64)
    obs = dict(keypoints_2d=torch.rand(B, C, 2, 2, dtype=torch.float64) * 100 + 200,
               K=K.expand(B, C, 3, 3), R=torch.eye(3, dtype=torch.float64).expand(B, C, 3, 3),
               t=torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64).expand(B, C, 3))
    pts = torch.randn(B, 2, 3, dtype=torch.float64) * 0.2
    return h, obs, pts


def test_handler_scores_errors_in_noise_units_with_matching_jacobian():
    h, obs, pts = _handler_and_data()
    out = SimpleNamespace(joints=pts)
    extra = h.stage_observations(out, obs, {}, None)
    scale = extra[h.scale_key]
    assert scale.shape == (3, 2, 2)
    scaled = dict(obs, **extra)
    r_pix = h.point_residuals(pts, obs, {})
    r = h.point_residuals(pts, scaled, {})
    # without a robust kernel the residuals are exactly the pixel errors over the scale
    h_plain = Keypoint2DHandler('kp', source='joints', scale_from_residuals=True)
    h_plain.setup(SimpleNamespace(joint_names=['a', 'b'], keypoint_names=[]),
                  dict(keypoint_names=['a', 'b']))
    e_pix = h_plain.point_residuals(pts, obs, {})
    e = h_plain.point_residuals(pts, scaled, {})
    assert torch.allclose(e, e_pix / scale[..., None])
    assert not torch.allclose(r, r_pix)
    # the closed-form Jacobian matches autodiff of the scaled residuals
    r2, A = h.point_residuals_and_jacobian(pts, scaled, {})
    assert torch.allclose(r2, r)
    jac = torch.autograd.functional.jacobian(lambda p: h.point_residuals(p, scaled, {}), pts)
    # (B, C, M, 2, B, M, 3) -> each residual's own point
    idx = torch.arange(3)
    own = jac[idx, :, :, :, idx]                  # (B, C, M, 2, M, 3)
    m = torch.arange(2)
    own = own[:, :, m, :, m].permute(1, 2, 0, 3, 4)   # (B, C, M, 2, 3)
    assert torch.allclose(A, own, atol=1e-10)
    # a wrong-shaped scale is refused
    with pytest.raises(ValueError, match='residual_scale'):
        h.point_residuals(pts, dict(obs, **{h.scale_key: scale[:, :1]}), {})


def test_scales_are_floored_at_a_fraction_of_the_animals_extent():
    """A frame fitted with about as many parameters as coordinates absorbs its label
    noise, and of two views the fit follows one: where two views see a point its
    residuals must not make its labels look more precise than 1 % of the animal's size
    in the image (whatever the resolution)."""
    from smilfit.handlers.keypoint2d import observed_extent
    h, obs, pts = _handler_and_data(keep_measured_total=False)
    out = SimpleNamespace(joints=pts)
    pix, _ = h.project(out, obs, {})
    exact = dict(obs, keypoints_2d=pix.detach())         # a perfect fit
    scale = h.stage_observations(out, exact, {}, None)[h.scale_key]
    valid = torch.ones(pix.shape[:-1], dtype=torch.bool)
    extent = observed_extent(pix, valid)
    assert torch.allclose(scale, (0.01 * extent)[..., None].expand_as(scale))
    big = dict(exact, keypoints_2d=10 * exact['keypoints_2d'])
    assert torch.allclose(observed_extent(big['keypoints_2d'], valid), 10 * extent)
    with pytest.raises(ValueError, match='min_relative_scale'):
        Keypoint2DHandler('kp', min_relative_scale=-1.0)
    with pytest.raises(ValueError, match='resolved_min_relative_scale'):
        Keypoint2DHandler('kp', resolved_min_relative_scale=-1.0)


def test_points_three_views_see_are_floored_only_as_a_guard():
    """Where three views see a point each view's share of its error shows in the
    residuals: its floor is the resolved one (0.1 % of the animal's size by default),
    so precise labels are not taken for noisier than they are; a point that only two of
    the three views see keeps the two-view floor."""
    from smilfit.handlers.keypoint2d import observed_extent, relative_scale_floor
    h, obs, pts = _handler_and_data(keep_measured_total=False)
    three = {k: torch.cat([v, v[:, :1]], 1) for k, v in obs.items()}
    three['t'] = three['t'].clone()
    three['t'][:, 2, 0] = 1.0                              # a third camera, moved aside
    out = SimpleNamespace(joints=pts)
    pix, _ = h.project(out, three, {})
    visible = torch.ones(pix.shape[:-1], dtype=torch.bool)
    visible[0, 2, 1] = False                               # point b of frame 0 in two views
    exact = dict(three, keypoints_2d=pix.detach(), visible=visible)
    scale = h.stage_observations(out, exact, {}, None)[h.scale_key]
    extent = observed_extent(pix, visible)[..., None]
    floor = torch.full_like(scale, 0.001)
    floor[0, :, 1] = 0.01
    assert torch.allclose(scale, floor * extent)
    assert torch.equal(relative_scale_floor(visible, 0.5, 0.25)[0, :, 1],
                       torch.tensor([0.5, 0.5, 0.5]))
    # three views, but where the stage before found one of them far less precise than the
    # others, the fit follows the other two as it follows two views: floored as two
    previous = torch.ones(visible.shape, dtype=torch.float64)
    assert torch.equal(relative_scale_floor(visible, 0.5, 0.25, previous)[1],
                       torch.full((3, 2), 0.25))
    previous[1, 2, 0] = 3.0
    floor = relative_scale_floor(visible, 0.5, 0.25, previous)
    assert torch.equal(floor[1, :, 0], torch.full((3,), 0.5))
    assert torch.equal(floor[1, :, 1], torch.full((3,), 0.25))
    # a handler asked for one floor everywhere has it
    same = Keypoint2DHandler('kp', source='joints', scale_from_residuals=True,
                             resolved_min_relative_scale=0.01, keep_measured_total=False)
    same.setup(SimpleNamespace(joint_names=['a', 'b'], keypoint_names=[]),
               dict(keypoint_names=['a', 'b']))
    scale = same.stage_observations(out, exact, {}, None)[same.scale_key]
    assert torch.allclose(scale, 0.01 * extent.expand_as(scale))


def test_the_floor_weighs_labels_against_each_other_not_the_data_against_the_priors():
    """Where the floor binds (labels more precise than it), a sample's floored scales are
    scaled down together until their summed variance is the measured one: its labels
    keep the floor's balance, the data their measured weight against the priors. Where
    some labels' scales are far above the floor, the floor barely moves the total and
    the scales stay the floored ones; they never go below the resolved floor."""
    from smilfit.handlers.keypoint2d import observed_extent, total_noise_ratio
    valid = torch.tensor([[[True, True], [True, True], [False, True]],
                          [[True, True], [True, True], [True, True]]])
    measured = torch.tensor([[[0.5, 0.2], [0.5, 0.4], [9.0, 0.5]],
                             [[0.5, 0.2], [15.0, 0.5], [0.5, 0.5]]], dtype=torch.float64)
    floored = torch.maximum(measured, torch.full_like(measured, 1.8))
    ratio = total_noise_ratio(measured, floored, valid)
    assert ratio.shape == (2,)
    scaled = floored * ratio[:, None, None]
    total = lambda s: (valid * s * s).sum((1, 2))                          # noqa: E731
    assert torch.allclose(total(scaled), total(measured))
    # the labels' balance is the floor's (sample 0: every label weighs alike)
    assert torch.allclose(scaled[0][valid[0]], scaled[0, 0, 0].expand(5))
    assert float(ratio[1]) > 0.9                  # one label far above the floor
    assert float(total_noise_ratio(measured, floored, torch.zeros_like(valid))[0]) == 1.0
    # the handler: labels 1e-3 px off an exact fit in two views weigh as the measured
    # total says, down to the resolved floor; the option off keeps the floor as it is
    h, obs, pts = _handler_and_data()
    off, _, _ = _handler_and_data(keep_measured_total=False)
    out = SimpleNamespace(joints=pts)
    pix, _ = h.project(out, obs, {})
    near = dict(obs, keypoints_2d=pix.detach() + 1e-3)
    scale = h.stage_observations(out, near, {}, None)[h.scale_key]
    floor = off.stage_observations(out, near, {}, None)[off.scale_key]
    extent = observed_extent(pix, torch.ones(pix.shape[:-1], dtype=torch.bool))[..., None]
    assert torch.allclose(floor, 0.01 * extent.expand_as(floor))
    assert torch.allclose(scale, 0.001 * extent.expand_as(scale))
    half = dict(obs, keypoints_2d=pix.detach() + 0.005 * extent[..., None])   # 0.7 % off
    scale = h.stage_observations(out, half, {}, None)[h.scale_key]
    assert bool((scale < 0.99 * floor).all()) and bool((scale > 0.0015 * extent).all())


def test_scale_pooling_is_checked_and_decides_per_animal_pooling():
    assert Keypoint2DHandler('kp', scale_from_residuals=True).pools_per_animal
    assert not Keypoint2DHandler('kp', scale_from_residuals=True,
                                 scale_pooling='frame').pools_per_animal
    with pytest.raises(ValueError, match='scale_pooling'):
        Keypoint2DHandler('kp', scale_from_residuals=True, scale_pooling='view')
