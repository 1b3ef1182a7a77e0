"""Priors whose strength follows the evidence: with the keypoints scored in
noise units and the skeleton prior counted once per animal, a skeleton seen in two
frames stays near the template, one seen in many follows the data."""
import numpy as np
import pytest
import torch

from smilfit.datasets.synthetic import build_body_model, ring_cameras, up_vector
from smilfit.datasets.synthetic_animals import observable_bones
from smilfit.cameras import project_points
from smilfit.registrants import SMILRegistrant

NOISE_PX = 3.0
FRAMES = 48


@pytest.fixture(scope='module')
def session():
    """One animal (bones moved by 5 % of the body length each) in FRAMES random poses
    seen by 4 cameras with NOISE_PX pixels of label noise; the true poses too."""
    torch.set_num_threads(1)
    model = build_body_model(None).double()
    J = model.num_joints
    rng = np.random.default_rng(0)
    with torch.no_grad():
        rest = model(return_vertices=False).joints[0]
    length = float((rest.amax(0) - rest.amin(0)).amax())
    observable = torch.as_tensor(observable_bones(model))
    bones = torch.as_tensor(0.05 * length * rng.standard_normal((J, 3)))
    bones[~observable] = 0.0
    up = up_vector(model.data.up_axis)
    cams = ring_cameras(4, target=np.zeros(3), up=up, distance=2.5 * length,
                        elevations_deg=[35.0, 20.0, 35.0, 20.0],
                        azimuths_deg=[0.0, 90.0, 180.0, 270.0], focal=600.0,
                        image_size=(512, 512))
    pose = dict(global_orient=torch.as_tensor(rng.uniform(-np.pi, np.pi, (FRAMES, 1)) * up),
                body_pose=torch.as_tensor(0.2 * rng.standard_normal((FRAMES, J - 1, 3))),
                transl=torch.zeros(FRAMES, 3, dtype=torch.float64))
    with torch.no_grad():
        kp = model(**pose, bone_trans=bones[None].expand(FRAMES, J, 3),
                   return_vertices=False).keypoints
    cam = {k: torch.as_tensor(v)[None].expand(FRAMES, *v.shape) for k, v in cams.items()
           if k in ('K', 'R', 't')}
    uv = project_points(kp[:, None].expand(FRAMES, 4, *kp.shape[1:]), cam['K'], cam['R'],
                        cam['t'], None)
    uv = uv + NOISE_PX * torch.as_tensor(rng.standard_normal(tuple(uv.shape)))
    obs = dict(keypoints_2d=uv, **cam)
    return dict(model=model, bones=bones, observable=observable, length=length, obs=obs,
                pose=pose)


def _estimate(session, frames, prior_weight=1.0, rounds=2):
    """The skeleton (J, 3) from the first ``frames`` frames, poses at their truth."""
    model = session['model']
    reg = SMILRegistrant(
        model, init='zeros', shared=dict(bone_trans=True),
        handlers=[dict(type='Keypoint2DHandler', name='kp2d', scale_from_residuals=True),
                  dict(type='SkeletonPriorHandler', name='skeleton_prior',
                       weight=prior_weight, offset_scale=None)],
        stages=[dict(name='skeleton', fit=['bone_trans'], n_iter=20, rounds=rounds,
                     optimizer=dict(type='LBFGS', max_iter=30), ftol=1e-12)])
    reg.setup(dict(keypoint_names=list(model.keypoint_names)))
    obs = {k: v[:frames] for k, v in session['obs'].items()}
    init = {k: v[:frames] for k, v in session['pose'].items()}
    result = reg.fit(obs, init_params=init)
    return result.params['bone_trans'][0]


def _error(session, bones):
    """Largest bone-translation error of the observable bones, in body lengths."""
    diff = (bones - session['bones'])[session['observable']]
    return float(diff.norm(dim=-1).max()) / session['length']


def test_more_frames_outweigh_the_prior(session):
    few = _estimate(session, 2)
    many = _estimate(session, FRAMES)
    err_few, err_many = _error(session, few), _error(session, many)
    # many frames: the data decide (the truth is 5 % of the body length per bone away
    # from the template the prior pulls towards)
    assert err_many < 0.02, err_many
    assert err_many < 0.5 * err_few, (err_few, err_many)
    # two frames: the prior holds the skeleton nearer the template than the truth is
    obs_bones = session['observable']
    assert float(few[obs_bones].norm()) < float(session['bones'][obs_bones].norm())


def test_a_second_round_measures_the_noise_nearer_the_solution(session):
    """The noise scale taken where the skeleton stage starts includes the skeleton's own
    miss (here ~5 % of the body length), so one round weighs the data too little; the
    second round's scale is the label noise's."""
    one = _error(session, _estimate(session, FRAMES, rounds=1))
    two = _error(session, _estimate(session, FRAMES, rounds=2))
    assert two < 0.5 * one, (one, two)


def test_a_prior_counted_per_frame_would_swamp_many_frames(session):
    """What counting the prior once per sample did (its weight times the frames): the
    estimate from many frames is pulled to the template as if there were two."""
    once = _error(session, _estimate(session, FRAMES))
    per_frame = _error(session, _estimate(session, FRAMES, prior_weight=FRAMES))
    assert per_frame > 1.5 * once, (once, per_frame)


def _fit_poses(session, obs, keypoint_options, prior_weight=1.0):
    """Poses of every frame fitted to ``obs`` (skeleton known) by two rounds of
    Levenberg-Marquardt, the keypoints in noise units (``keypoint_options`` for the
    handler) against a fixed pose prior; the (FRAMES, M) keypoint errors to the truth
    (model units)."""
    model = session['model']
    reg = SMILRegistrant(
        model, init='zeros',
        handlers=[dict(type='Keypoint2DHandler', name='kp2d', scale_from_residuals=True,
                       **keypoint_options),
                  dict(type='PosePriorHandler', name='pose_prior', weight=prior_weight)],
        stages=[dict(name='pose', fit=['global_orient', 'transl', 'body_pose'], n_iter=30,
                     rounds=2, optimizer=dict(type='LevenbergMarquardt'), ftol=1e-10)])
    reg.setup(dict(keypoint_names=list(model.keypoint_names)))
    init = {k: v.clone() for k, v in session['pose'].items()}
    init['bone_trans'] = session['bones'][None].expand(FRAMES, *session['bones'].shape)
    result = reg.fit(obs, init_params=init, fixed=['bone_trans'])
    with torch.no_grad():
        truth = model(**session['pose'], bone_trans=init['bone_trans'],
                      return_vertices=False).keypoints
    return (result.output.keypoints - truth).norm(dim=-1)


def _pose_fit(session, pooling, noisy, views=(0, 1)):
    """Poses of every frame fitted from ``views`` (skeleton known), with keypoints
    ``noisy`` (M,) bool given 8x the label noise in every frame; the (FRAMES, M)
    keypoint errors to the truth (model units)."""
    rng = np.random.default_rng(1)
    obs = {k: v[:, list(views)] for k, v in session['obs'].items()}
    extra = torch.zeros_like(obs['keypoints_2d'])
    extra[:, :, noisy] = torch.as_tensor(
        7.0 * NOISE_PX * rng.standard_normal(tuple(extra[:, :, noisy].shape)))
    obs['keypoints_2d'] = obs['keypoints_2d'] + extra
    return _fit_poses(session, obs, dict(scale_pooling=pooling))


def test_noise_scales_per_keypoint_over_the_animal_weigh_imprecise_labels_less(session):
    """Some keypoints are labelled 8x less precisely than the others in every frame.
    Per-frame stages scoring every (animal, view, keypoint) in its own noise units
    (``scale_pooling='animal'``) weigh them less and fit the frames better from two views
    than one scale per (frame, view) (``'frame'``), which treats them like the others."""
    M = session['obs']['keypoints_2d'].shape[2]
    noisy = torch.zeros(M, dtype=torch.bool)
    noisy[::3] = True
    animal = _pose_fit(session, 'animal', noisy)
    frame = _pose_fit(session, 'frame', noisy)
    good = ~noisy
    # on the precise keypoints the fit is much better; overall it is better too
    assert float(animal[:, good].median()) < 0.7 * float(frame[:, good].median()), (
        float(animal[:, good].median()), float(frame[:, good].median()))
    assert float(animal.median()) < float(frame.median())


def _precise_two_view_fit(session, keep_measured_total):
    """Poses fitted from two views whose labels are 0.2 px off, well below the noise
    scales' floor (1 % of the animal's extent in the image, about 2.4 px here), against
    the fixed pose prior of ``configs/_base_/fitting/keypoints_2d.py`` (weight 10); the
    (FRAMES, M) keypoint errors to the truth (model units)."""
    model = session['model']
    bones = session['bones'][None].expand(FRAMES, *session['bones'].shape)
    with torch.no_grad():
        truth = model(**session['pose'], bone_trans=bones, return_vertices=False).keypoints
    cam = {k: session['obs'][k][:, :2] for k in ('K', 'R', 't')}
    uv = project_points(truth[:, None].expand(FRAMES, 2, *truth.shape[1:]), cam['K'],
                        cam['R'], cam['t'], None)
    rng = np.random.default_rng(2)
    obs = dict(keypoints_2d=uv + 0.2 * torch.as_tensor(rng.standard_normal(tuple(uv.shape))),
               **cam)
    return _fit_poses(session, obs, dict(keep_measured_total=keep_measured_total),
                      prior_weight=10.0)


def test_labels_more_precise_than_the_floor_weigh_against_the_prior_as_measured(session):
    """With two views the noise scales are floored at 1 % of the animal (which view
    carries a point's error cannot be told). The floor sets how the labels weigh against
    each other; with ``keep_measured_total`` their total weight against the pose prior is
    what the residuals measure, so precise labels hold the fit nearer the truth than
    when they are weighted as no more precise than the floor."""
    measured = float(_precise_two_view_fit(session, True).median())
    floored = float(_precise_two_view_fit(session, False).median())
    assert measured < 0.8 * floored, (measured, floored)
