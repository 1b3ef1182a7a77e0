"""The motion prior's chains, differences and scales, checked on known cases."""
import math
import warnings
from types import SimpleNamespace

import pytest
import torch

from smilfit.handlers.base import variance_key
from smilfit.handlers.motion_prior import (MotionPriorHandler, ancestors, chain_order,
                                           chain_positions, consecutive_frames,
                                           cut_chains, far_partners, finite_difference,
                                           motion_scale, unwrap_rotations, variogram,
                                           video_share)


def test_chains_follow_each_animal_and_break_at_gaps():
    frames = torch.tensor([5, 3, 4, 10, 6, 3, 4, 11, 12, 4])
    animals = torch.tensor([0, 0, 0, 0, 0, 1, 1, 0, 0, 2])
    prev = consecutive_frames(frames, animals)
    # animal 0: 3 -> 4 -> 5 -> 6 and 10 -> 11 -> 12; animal 1: 3 -> 4; animal 2 alone
    assert prev.tolist() == [2, -1, 1, -1, 0, -1, 5, 3, 7, -1]
    first, position = chain_positions(prev)
    assert first.tolist() == [1, 1, 1, 3, 1, 5, 5, 3, 3, 9]
    assert position.tolist() == [2, 0, 1, 0, 3, 0, 1, 1, 2, 0]
    table, lengths = chain_order(prev)
    assert lengths.tolist() == [4, 3, 2, 1]
    assert table.tolist() == [[1, 2, 0, 4], [3, 7, 8, -1], [5, 6, -1, -1], [9, -1, -1, -1]]
    assert ancestors(prev, 2)[:, 4].tolist() == [4, 0, 2]


def test_a_repeated_frame_is_not_a_link():
    prev = consecutive_frames(torch.tensor([1, 1, 2]), torch.zeros(3, dtype=torch.long))
    assert (prev >= 0).sum() == 1


def test_a_turn_past_half_a_revolution_is_a_small_step():
    # headings 3.0, then -3.0 (= 3.28) and -2.9 (= 3.38) radians about z
    v = torch.tensor([[0, 0, 3.0], [0, 0, -3.0], [0, 0, -2.9]], dtype=torch.float64)
    prev = torch.tensor([-1, 0, 1])
    step = finite_difference(v, ancestors(prev, 1), (1.0, -1.0), rotations=True)
    torch.testing.assert_close(step[:, 2], torch.tensor([0.0, 2 * math.pi - 6.0, 0.1],
                                                        dtype=torch.float64))
    unwrapped = unwrap_rotations(v[:, None], prev)[:, 0]
    torch.testing.assert_close(unwrapped[:, 2], torch.tensor(
        [3.0, 2 * math.pi - 3.0, 2 * math.pi - 2.9], dtype=torch.float64))


def _walk(T, sigma_q, sigma_n, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    truth = torch.cumsum(sigma_q * torch.randn(T, D, generator=g, dtype=torch.float64), 0)
    return truth + sigma_n * torch.randn(T, D, generator=g, dtype=torch.float64)


@pytest.mark.parametrize('sigma_n', [0.0, 0.03, 0.06])
def test_the_scale_is_the_motions_whatever_the_fits_noise(sigma_n):
    # a random walk of 0.03 a frame seen through per-frame noise up to 2x larger
    values = _walk(20000, 0.03, sigma_n, 3)
    prev = torch.arange(-1, 19999)
    scale = motion_scale(values, prev, variance=torch.full_like(values, sigma_n ** 2))
    assert scale.shape == (3,)
    assert torch.allclose(scale, torch.full_like(scale, 0.03), rtol=0.25)
    # without the fit's precision: no smoother than the frames' own steps
    blind = motion_scale(values, prev)
    steps = 1.4826 * (values[1:] - values[:-1]).abs().median(0).values
    assert (blind >= steps * (1 - 1e-9)).all()


def test_an_animal_sitting_still_gets_the_floor_not_zero():
    values = _walk(400, 0.0, 0.1, 3, seed=1)
    prev = torch.arange(-1, 399)
    scale = motion_scale(values, prev, variance=torch.full_like(values, 0.01))
    raw = (1.4826 * (values[1:] - values[:-1]).abs().median())
    assert (scale > 0).all() and (scale < raw).all()


def test_values_far_stiller_than_their_precision_are_not_taken_for_a_frozen_entry():
    # an entry held by a prior, or fitted to exact labels: it varies by 1e-7 while the
    # labels tell it to 0.1; the scale is the variogram's sampling error at that precision,
    # not the 1e-7 that would make the chain's system ill-conditioned
    values = _walk(400, 0.0, 1e-7, 3, seed=6)
    prev = torch.arange(-1, 399)
    scale = motion_scale(values, prev, variance=torch.full_like(values, 0.01))
    m2 = 398
    torch.testing.assert_close(scale, torch.full_like(scale, math.sqrt(0.02 / math.sqrt(m2))),
                               rtol=1e-6, atol=0.0)
    # an entry that never moved at all (not fitted) gets no motion term
    assert (motion_scale(torch.ones(400, 2, dtype=torch.float64), prev,
                         variance=torch.full((400, 2), 0.01, dtype=torch.float64)) == 0).all()


def test_chains_of_two_frames_are_not_smoothed_below_the_fits_precision():
    # every other frame left out (the frames a short video's skeleton is estimated from):
    # pairs of neighbours only, no lag-2 spread to tell motion from the fit's noise. An
    # entry fitted to exact labels moves 1e-11 between neighbours while the labels tell it
    # to 0.05: its scale is that precision, not the 1e-11 whose weight (1e22) froze the
    # pairs and left an animal's skeleton 9 % of its body length off
    T = 200
    frames = torch.arange(T) + torch.arange(T) // 2     # 0 1, 3 4, 6 7, ...
    prev = consecutive_frames(frames, torch.zeros(T, dtype=torch.long))
    assert int((ancestors(prev, 2)[2] >= 0).sum()) == 0
    values = _walk(T, 0.0, 1e-11, 3, seed=2)
    values[:, 2] = _walk(T, 0.0, 0.3, 1, seed=3)[:, 0]     # one entry moves far more
    variance = torch.full_like(values, 0.05 ** 2)
    scale = motion_scale(values, prev, variance=variance)
    torch.testing.assert_close(scale[:2], torch.full((2,), math.sqrt(2) * 0.05,
                                                     dtype=torch.float64))
    raw = 1.4826 * (values[1::2, 2] - values[0::2, 2]).abs().median()
    torch.testing.assert_close(scale[2], raw)          # its own steps, where larger
    # without the fit's precision: the frames' own steps
    blind = motion_scale(values, prev)
    assert (blind[:2] < 1e-9).all()
    # an entry that never moved gets no motion term
    assert (motion_scale(torch.ones(T, 2, dtype=torch.float64), prev,
                         variance=torch.full((T, 2), 0.01, dtype=torch.float64)) == 0).all()


@pytest.mark.parametrize('T', [60, 400])
def test_frames_drawn_anew_get_no_motion_term(T):
    # poses drawn anew every frame (spread 0.3) under consecutive frame indices (images of
    # a collection, a synthetic session), each fitted to a precision of 0.01: neighbours
    # are no nearer each other than frames far apart, so no frame tells its neighbour
    # anything
    g = torch.Generator().manual_seed(4)
    values = 0.3 * torch.randn(T, 6, generator=g, dtype=torch.float64)
    prev = torch.arange(-1, T - 1)
    assert (motion_scale(values, prev, variance=torch.full_like(values, 1e-4)) == 0).all()
    # the same spread as the fit's own noise: a still animal, smoothed at the floor
    raw = 1.4826 * (values[1:] - values[:-1]).abs().median(0).values
    still = motion_scale(values, prev, variance=torch.full_like(values, 0.09))
    assert (still > 0).all() and (still < 0.6 * raw).all()


@pytest.mark.parametrize('sigma_n', [0.0, 0.03, 0.1])
@pytest.mark.parametrize('seed', range(4))
def test_a_short_noisy_video_keeps_its_motion_term(sigma_n, seed):
    # 40 frames of a walk of 0.03 a frame, seen through noise up to 3x the step: told
    # from frames drawn anew, the scale stays the walk's (the floor where noise hides it)
    values = _walk(40, 0.03, sigma_n, 6, seed=seed)
    scale = motion_scale(values, torch.arange(-1, 39),
                         variance=torch.full_like(values, sigma_n ** 2))
    assert (scale > 0).all()
    assert float(scale.median()) < 0.03 * 4


def test_frames_drawn_anew_among_video_chains_of_other_animals_are_judged_together():
    # two animals' video and one whose frames are drawn anew: the walk's share decides
    # the scale of all three (one scale per entry), so the link is kept
    walk = torch.cat([_walk(100, 0.03, 0.0, 4, seed=s) for s in (1, 2)])
    g = torch.Generator().manual_seed(9)
    anew = 0.03 * torch.randn(20, 4, generator=g, dtype=torch.float64)
    values = torch.cat([walk, anew])
    frames = torch.cat([torch.arange(100), torch.arange(100), torch.arange(20)])
    animals = torch.cat([torch.zeros(100), torch.ones(100), torch.full((20,), 2)]).long()
    prev = consecutive_frames(frames, animals)
    scale = motion_scale(values, prev, variance=torch.full_like(values, 1e-8))
    assert (scale > 0.01).all() and (scale < 0.1).all()


def test_the_handler_says_when_numbered_frames_are_not_a_video():
    g = torch.Generator().manual_seed(3)
    T = 80
    params = dict(transl=0.3 * torch.randn(T, 3, generator=g, dtype=torch.float64),
                  body_pose=0.3 * torch.randn(T, 4, 3, generator=g, dtype=torch.float64))
    obs = {'frame_index': torch.arange(T), variance_key('transl'): torch.full((T, 3), 1e-4),
           variance_key('body_pose'): torch.full((T, 4, 3), 1e-4)}
    h = _handler(params=['transl', 'body_pose'])
    with pytest.warns(UserWarning, match='not smoothed as a video'):
        out = h.stage_observations(None, obs, params)
    # chains are kept, but no parameter has a motion term
    assert h.inverse_scales(out, 'transl') is None and h.inverse_scales(out, 'body_pose') is None
    with warnings.catch_warnings():                  # said once, not every batch and stage
        warnings.simplefilter('error')
        h.stage_observations(None, obs, params)
    # told they are a video, they are smoothed as one
    told = _handler(params=['transl', 'body_pose'], judge_video=False)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        out = told.stage_observations(None, obs, params)
    assert (told.inverse_scales(out, 'transl') > 0).all()
    # the same values as a walk: judged on both parameters together, smoothed
    walk = {k: torch.cumsum(0.1 * v, 0) for k, v in params.items()}
    out = h.stage_observations(None, obs, walk)
    assert (h.inverse_scales(out, 'transl') > 0).all()
    assert h.inverse_scales(out, 'body_pose').shape == (T, 4, 3)


def test_the_handler_says_when_chains_are_too_short_to_tell():
    # two chains of 16 frames drawn anew: too few pairs far apart to tell them from a
    # video, so they are smoothed as one, with a warning, once
    g = torch.Generator().manual_seed(5)
    T = 32
    params = dict(transl=0.3 * torch.randn(T, 3, generator=g, dtype=torch.float64))
    obs = {'frame_index': torch.cat([torch.arange(16), torch.arange(16)]),
           variance_key('transl'): torch.full((T, 3), 1e-4)}
    groups = torch.cat([torch.zeros(16), torch.ones(16)]).long()
    h = _handler(params=['transl'])
    with pytest.warns(UserWarning, match='too short to tell'):
        out = h.stage_observations(None, obs, params, groups)
    assert (h.inverse_scales(out, 'transl') > 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        h.stage_observations(None, obs, params, groups)          # said once
        # told they are a video: nothing to say
        _handler(params=['transl'], judge_video=False).stage_observations(
            None, obs, params, groups)
        # one chain of 80 frames is long enough to tell (here: not a video)
        long = dict(transl=0.3 * torch.randn(80, 3, generator=g, dtype=torch.float64))
        long_obs = {'frame_index': torch.arange(80),
                    variance_key('transl'): torch.full((80, 3), 1e-4)}
        warnings.filterwarnings('ignore', message='.*not smoothed as a video')
        _handler(params=['transl']).stage_observations(None, long_obs, long)


def test_the_bodys_turn_and_place_say_whether_frames_are_a_video():
    # a video whose joints the fit scatters beyond their precision (a twist the labels
    # leave free): the body's turn and place walk, so the frames are smoothed as a video
    T = 80
    g = torch.Generator().manual_seed(7)
    walk = torch.cumsum(0.05 * torch.randn(T, 3, generator=g, dtype=torch.float64), 0)
    scattered = 0.3 * torch.randn(T, 6, generator=g, dtype=torch.float64)
    prev = torch.arange(-1, T - 1)
    grams = {name: variogram(v, prev, variance=torch.full_like(v, 1e-6))
             for name, v in (('transl', walk), ('global_orient', walk.flip(1)),
                             ('body_pose', scattered))}
    assert float(video_share(grams)) == 1.0
    assert float(video_share({'body_pose': grams['body_pose']})) == 0.0
    # the body's place drawn anew too: not a video
    grams['transl'] = grams['global_orient'] = variogram(
        scattered[:, :3], prev, variance=torch.full((T, 3), 1e-6, dtype=torch.float64))
    assert float(video_share(grams)) == 0.0


def test_far_partners_are_a_fixed_lag_along_each_chain():
    prev = torch.tensor([-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, -1, 10, 11, 12, -1, 14])
    partner = far_partners(prev, lag=4)
    # a chain of 10 (lag 4), one of 4 (lag 2), one of 2 (too short)
    assert partner.tolist() == [4, 5, 6, 7, 8, 9, -1, -1, -1, -1, 12, 13, -1, -1, -1, -1]
    # frames in any order: the partner is found by chain and place, not by row
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    where = torch.empty_like(order)
    where[order] = torch.arange(16)
    shuffled = torch.where(prev[order] >= 0, where[prev[order].clamp_min(0)], prev[order])
    moved = far_partners(shuffled, lag=4)
    expected = torch.where(partner[order] >= 0, where[partner[order].clamp_min(0)],
                           partner[order])
    assert moved.tolist() == expected.tolist()


def test_an_axis_that_moves_gets_its_own_scale():
    # a heading turning about the vertical, the other two axes still
    g = torch.Generator().manual_seed(5)
    values = torch.zeros(300, 3, dtype=torch.float64)
    values[:, 2] = torch.cumsum(0.05 * torch.randn(300, generator=g, dtype=torch.float64), 0)
    values = values + 0.001 * torch.randn(300, 3, generator=g, dtype=torch.float64)
    scale = motion_scale(values, torch.arange(-1, 299), variance=torch.full_like(values, 1e-6))
    assert 0.04 < float(scale[2]) < 0.06
    assert (scale[:2] < 0.2 * scale[2]).all()


def _handler(**kwargs):
    h = MotionPriorHandler('motion', **kwargs)
    h.setup(None)
    return h


@pytest.mark.parametrize('order', [1, 2])
def test_the_loss_is_the_weighted_squared_differences_over_the_scale(order):
    T = 50
    values = _walk(T, 0.1, 0.0, 3, seed=2)
    params = dict(transl=values)
    obs = dict(frame_index=torch.arange(T))
    h = _handler(params=['transl'], order=order, weight=4.0)
    obs.update(h.stage_observations(None, obs, params))
    scale = obs[h.scale_key('transl')][0]
    diff = values.clone()
    for _ in range(order):
        diff = diff[1:] - diff[:-1]
    loss = h(SimpleNamespace(joints=torch.zeros(T, 1, 3)), obs, params)
    assert loss.shape == (T,) and (loss[:order] == 0).all()
    torch.testing.assert_close(loss[order:], 4.0 * ((diff / scale) ** 2).sum(1))


def test_no_frame_indices_no_motion_term():
    h = _handler(params=['transl'])
    params = dict(transl=torch.randn(5, 3))
    assert h.stage_observations(None, {}, params) == {}
    assert h.residuals(params, {}) == {}


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match='order'):
        MotionPriorHandler('m', order=3)
    with pytest.raises(ValueError, match='params'):
        MotionPriorHandler('m', params='transl')
    with pytest.raises(ValueError, match='judge_video'):
        MotionPriorHandler('m', judge_video='yes')
    for bad in (1, 0, 2.5, True, '64'):
        with pytest.raises(ValueError, match='chain_frames'):
            MotionPriorHandler('m', chain_frames=bad)


def test_chains_are_cut_into_pieces_of_the_length_asked_for():
    frames = torch.tensor([5, 3, 4, 10, 6, 3, 4, 11, 12, 4, 7])
    animals = torch.tensor([0, 0, 0, 0, 0, 1, 1, 0, 0, 2, 0])
    prev = consecutive_frames(frames, animals)
    # animal 0: 3 4 5 6 7 cut into 3 4 | 5 6 | 7; 10 11 | 12; animal 1: 3 4; animal 2 alone
    cut = cut_chains(prev, 2)
    _, lengths = chain_order(cut)
    assert sorted(lengths.tolist()) == [1, 1, 1, 2, 2, 2, 2]
    assert cut[0] == -1 and cut[4] == 0 and cut[2] == 1      # 5 starts a piece, 6 follows 5
    assert torch.equal(cut_chains(prev, 100), prev)           # chains no longer: unchanged


def test_cut_chains_keep_the_motion_scale_of_the_whole_batch():
    T = 60
    values = _walk(T, 0.1, 0.02, 3, seed=4)
    params = dict(transl=values)
    obs = dict(frame_index=torch.arange(T))
    whole = _handler(params=['transl'], chain_frames=None).stage_observations(None, obs,
                                                                               params)
    _, lengths = chain_order(whole[_handler().prev_key])
    assert lengths.tolist() == [T]
    h = _handler(params=['transl'], chain_frames=16)
    cut = h.stage_observations(None, obs, params)
    torch.testing.assert_close(cut[h.scale_key('transl')], whole[h.scale_key('transl')])
    _, lengths = chain_order(cut[h.prev_key])
    assert lengths.tolist() == [16, 16, 16, 12]
    # the loss links only frames inside a piece
    obs.update(cut)
    loss = h(SimpleNamespace(joints=torch.zeros(T, 1, 3)), obs, params)
    assert (loss[[0, 16, 32, 48]] == 0).all() and (loss[[1, 17, 33, 49]] > 0).all()


def test_a_long_batch_is_fitted_as_chains_of_128_frames_unless_asked_otherwise():
    T = 300
    params = dict(transl=_walk(T, 0.1, 0.02, 3, seed=5))
    obs = dict(frame_index=torch.arange(T))
    h = _handler(params=['transl'])
    _, lengths = chain_order(h.stage_observations(None, obs, params)[h.prev_key])
    assert lengths.tolist() == [128, 128, 44]
