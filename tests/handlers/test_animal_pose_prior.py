"""The pose prior of each animal's own frames: its statistics are the animal's robust
centre and spread, shrunk to the fixed prior with few frames or no fitted pose; the
residuals are in units of that spread; the spread adds the frames' posterior variance, which
recovers the animal's own from MAP fits; a Levenberg-Marquardt fit pools them per animal and
hands the later stages the variance the earlier ones measured."""
import numpy as np
import pytest
import torch

from smilfit.handlers import AnimalPosePriorHandler, animal_pose_statistics

from ..conftest import benchmark_module, mouse_session_config_on_demo_mouse


def test_many_frames_give_the_animals_own_centre_and_spread():
    gen = torch.Generator().manual_seed(0)
    centre = torch.tensor([[0.3, -0.2, 0.0], [1.0, 0.5, -0.7]], dtype=torch.float64)
    spread = torch.tensor([[0.05, 0.2, 0.1], [0.3, 0.01, 0.5]], dtype=torch.float64)
    poses = centre + spread * torch.randn(4000, 2, 3, generator=gen, dtype=torch.float64)
    poses = torch.cat([poses, -poses])                  # two animals, mirrored poses
    groups = torch.arange(2).repeat_interleave(4000)
    mean, scale = animal_pose_statistics(poses, groups, prior_scale=1.0, prior_frames=3.0)
    w = 3999 / (3999 + 3.0)
    # within 5 standard errors of a median (1.25 sigma / sqrt(n)) and of a MAD (~1.65)
    bound = 5 * 1.25 * spread / np.sqrt(4000)
    assert ((mean[0] - w * centre).abs() < bound).all()
    assert ((mean[-1] + w * centre).abs() < bound).all()
    expected = torch.sqrt(w * spread ** 2 + (1 - w) * 1.0)     # variances mixed
    low = torch.sqrt(w * (spread * (1 - 5 * 1.65 / np.sqrt(4000))) ** 2 + (1 - w))
    assert ((scale[0] - expected).abs() < expected - low).all()
    assert (mean[:4000] == mean[0]).all() and (scale[4000:] == scale[-1]).all()


def test_a_few_frames_are_shrunk_to_the_fixed_prior_and_one_frame_gets_it():
    # 5 frames: centre (median) 0.2, absolute deviations 0, .1, .1, .2, .2 -> MAD 0.1
    values = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    poses = torch.zeros(6, 1, 3, dtype=torch.float64)
    poses[:5, 0, 0] = values
    poses[5] = 2.0                                       # an animal seen once
    groups = torch.tensor([0, 0, 0, 0, 0, 1])
    mean, scale = animal_pose_statistics(poses, groups, prior_scale=0.8, prior_frames=4.0)
    w = 4 / (4 + 4.0)                                    # n - 1 = 4 frames of evidence
    np.testing.assert_allclose(mean[0, 0, 0], w * 0.2)
    np.testing.assert_allclose(scale[0, 0, 0], np.sqrt(w * (1.4826 * 0.1) ** 2
                                                       + (1 - w) * 0.8 ** 2))
    # axes 1 and 2 were never moved from their start: no evidence, the fixed prior
    assert (mean[0, 0, 1:] == 0).all() and (scale[0, 0, 1:] == 0.8).all()
    assert (mean[5] == 0).all() and (scale[5] == 0.8).all()



def test_the_posterior_variance_is_added_to_the_spread_where_known():
    values = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    poses = torch.zeros(5, 1, 3, dtype=torch.float64)
    poses[:, 0, 0] = values
    variance = torch.full_like(poses, 0.02)
    variance[0, 0, 0] = float('nan')                    # a frame the stage left out
    mean, scale = animal_pose_statistics(poses, torch.zeros(5, dtype=torch.long),
                                         prior_scale=0.8, prior_frames=4.0, variance=variance)
    w = 4 / (4 + 4.0)
    np.testing.assert_allclose(scale[0, 0, 0], np.sqrt(
        w * ((1.4826 * 0.1) ** 2 + 0.02) + (1 - w) * 0.8 ** 2))
    # never-moved components stay the fixed prior, whatever variance is given
    assert (scale[0, 0, 1:] == 0.8).all() and (mean[0, 0, 1:] == 0).all()


def test_map_fits_with_their_posterior_variance_recover_the_animals_spread():
    """A conjugate Gaussian animal: true poses N(0, s^2) per component, each seen through
    noise of precision d (one component pinned by its labels, one barely measured). MAP
    fits under a prior of the estimated scale, re-estimated as the stages do: with the
    posterior variance the estimate settles at s (EM's fixed point; slowly where the labels
    say little, from above, so a few stages leave such a component looser than its truth,
    never tighter); from the fitted values alone it collapses for the barely measured
    component."""
    gen = torch.Generator().manual_seed(0)
    n, s = 20000, torch.tensor([0.3, 0.3], dtype=torch.float64)
    d = torch.tensor([100.0, 4.0], dtype=torch.float64)       # noise 0.1 and 0.5 rad
    truth = s * torch.randn(n, 1, 2, generator=gen, dtype=torch.float64)
    seen = truth + torch.randn(n, 1, 2, generator=gen, dtype=torch.float64) / d.sqrt()
    groups = torch.zeros(n, dtype=torch.long)

    def settle(with_variance, stages=300, prior_frames=0.0):
        scale = torch.ones(2, dtype=torch.float64)             # the fixed 1 rad start
        for _ in range(stages):
            prior = 1 / scale ** 2
            fitted = (d * seen) / (d + prior)                  # MAP, prior mean 0
            variance = (1 / (d + prior)).expand_as(fitted)
            _, scale = animal_pose_statistics(fitted, groups, 1.0, prior_frames,
                                              variance if with_variance else None)
            scale = scale[0, 0]
        return scale
    recovered, collapsed = settle(True), settle(False, stages=5)
    assert ((recovered - s).abs() < 0.1 * s).all()
    assert collapsed[1] < 0.05 * s[1] and collapsed[0] < 0.95 * s[0]
    for prior_frames in (0.0, 3.0):
        three = settle(True, stages=3, prior_frames=prior_frames)
        assert (three > 0.9 * s).all() and three[1] > recovered[1]


def test_residuals_are_in_units_of_the_animals_spread():
    handler = AnimalPosePriorHandler('pose_prior', prior_scale=0.5)
    pose = torch.randn(4, 2, 3, dtype=torch.float64)
    params = dict(body_pose=pose)
    np.testing.assert_allclose(handler.param_residuals(params, {}), pose.reshape(4, 6) / 0.5)
    obs = handler.stage_observations(None, {}, params, torch.tensor([0, 0, 0, 1]))
    assert set(obs) == {'pose_prior.mean', 'pose_prior.scale'}
    r = handler.param_residuals(params, obs)
    np.testing.assert_allclose(r, ((pose - obs['pose_prior.mean'])
                                   / obs['pose_prior.scale']).reshape(4, 6))
    assert handler.pools_per_animal and handler.residual_kind == 'params'
    with pytest.raises(ValueError, match='axis-angle'):
        handler.param_residuals(dict(body_pose=torch.zeros(4, 2, 6)), {})
    with pytest.raises(ValueError, match='prior_scale'):
        AnimalPosePriorHandler('p', prior_scale=0.0)


@pytest.mark.parametrize('posterior_spread', [False, True])
def test_a_levenberg_marquardt_fit_with_it_pools_each_animals_frames(tmp_path,
                                                                     posterior_spread):
    """The shipped multi-camera config with the animal prior, on two animals: every
    stage after the first pose gets each animal's own statistics (the same within an
    animal, different between them), and the fit converges; with ``posterior_spread``
    those stages get each frame's posterior variance of the pose, without it none is
    computed."""
    from smilfit.apis.fitting import fit_dataset
    from smilfit.datasets.synthetic_animals import generate_animal_session
    data = tmp_path / 'animals.h5'
    generate_animal_session(data, num_animals=2, frames=6, num_views=4, noise_px=0.5,
                            pose_std=0.3, seed=1)
    cfg = mouse_session_config_on_demo_mouse(data, batch_size=12)
    priors = [h for h in cfg.registrant.handlers if h['type'] == 'AnimalPosePriorHandler']
    assert [h['name'] for h in priors] == ['pose_prior']
    priors[0]['posterior_spread'] = posterior_spread
    if not posterior_spread:
        # (the motion prior reads the variances too: without it no handler asks)
        benchmark_module('holdout').apply_variant(cfg, 'no_motion')
    seen, variances = [], []
    original = AnimalPosePriorHandler.stage_observations

    def spy(self, output, observations, params, groups=None):
        out = original(self, output, observations, params, groups)
        seen.append((groups.clone(), out['pose_prior.scale'].clone()))
        variances.append(observations.get('posterior_variance/body_pose'))
        return out
    AnimalPosePriorHandler.stage_observations = spy
    try:
        results = fit_dataset(cfg, tmp_path / 'work', progress=False)
    finally:
        AnimalPosePriorHandler.stage_observations = original
    assert results.exists()
    assert len(seen) >= 3
    groups, scale = seen[-1]
    assert groups.unique().numel() == 2
    for g in (0, 1):
        rows = scale[groups == g]
        assert (rows == rows[0]).all()
    assert not torch.equal(scale[groups == 0][0], scale[groups == 1][0])
    assert (scale < 1.0).any()          # fitted poses: the animals' own, narrower spreads
    import h5py
    with h5py.File(results, 'r') as f:
        assert np.isfinite(f['fitted_keypoints_3d'][()]).all()
    # the stages after a pose stage get each frame's posterior variance of the pose:
    # positive, and below the fixed prior's (the prior alone bounds it)
    given = [v for v in variances if v is not None]
    if not posterior_spread:
        assert not given
        return
    assert variances[0] is None and given
    assert given[-1].shape == scale.shape
    assert torch.isfinite(given[-1]).all() and (given[-1] > 0).all()
    assert (given[-1] <= 1.0 + 1e-6).all()


def test_the_closed_form_jacobian_is_the_residuals_derivative():
    handler = AnimalPosePriorHandler('pose_prior', prior_scale=0.7)
    pose = torch.randn(3, 4, 3, dtype=torch.float64)
    obs = handler.stage_observations(None, {}, dict(body_pose=pose), torch.tensor([0, 0, 1]))
    for observations in (obs, {}):
        jac = torch.func.jacrev(lambda p: handler.param_residuals(
            dict(body_pose=p), observations).sum(0))(pose)          # (12, 3, 4, 3)
        expected = jac.reshape(12, 3, 12).permute(1, 0, 2)
        diagonal = handler.param_residual_diagonal(dict(body_pose=pose), observations)
        torch.testing.assert_close(torch.diag_embed(diagonal), expected)


def test_without_a_fixed_prior_few_frames_get_none_and_failed_frames_count_for_nothing():
    """``prior_scale=None`` (a value with no natural centre, such as the global scale):
    the animal's own centre, a scale that grows as frames get fewer, no prior for one
    frame; a non-finite value (a failed frame) is left out of the statistics."""
    values = torch.tensor([[4.0], [4.2], [3.8], [4.1], [float('-inf')], [7.0]],
                          dtype=torch.float64)
    groups = torch.tensor([0, 0, 0, 0, 0, 1])
    mean, scale = animal_pose_statistics(values, groups, prior_scale=None, prior_frames=3.0)
    centre = torch.tensor([4.0, 4.2, 3.8, 4.1], dtype=torch.float64).quantile(0.5)
    spread = 1.4826 * (torch.tensor([4.0, 4.2, 3.8, 4.1], dtype=torch.float64)
                       - centre).abs().quantile(0.5)
    w = 3 / (3 + 3.0)                                     # 4 finite frames
    torch.testing.assert_close(mean[0, 0], centre)
    torch.testing.assert_close(scale[0, 0], spread.double() / w ** 0.5)
    assert mean[5, 0] == 7.0 and torch.isinf(scale[5, 0])  # one frame: no prior
    handler = AnimalPosePriorHandler('scale_prior', param='global_log_scale',
                                     prior_scale=None)
    params = dict(global_log_scale=values[:4])
    assert (handler.param_residuals(params, {}) == 0).all()        # outside a stage
    assert (handler.param_residual_diagonal(params, {}) == 0).all()
