"""One skeleton per animal (issue 13): a dataset fit estimates the shared parameters once
per animal and session, whatever the batch size, and never blends two animals."""
import json
import math

import h5py
import numpy as np
import pytest
import torch

from smilfit.apis.animals import identify_animals, pack_animals, skeleton_samples
from smilfit.apis.fitting import FittingConfigError, fit_dataset
from smilfit.cameras import project_points
from smilfit.datasets.hdf5_format import DatasetWriter
from smilfit.datasets.synthetic import build_body_model, ring_cameras, up_vector


def test_identify_animals_by_track_then_instance():
    a = identify_animals([0, 0, 0, 0, 1, 1, 1], [0, 1, 0, 1, 0, 0, 1],
                         ['a', 'b', 'a', 'b', '', '', ''])
    assert a.of_sample.tolist() == [0, 1, 0, 1, 2, 2, 3]
    assert a.session.tolist() == [0, 0, 1, 1]
    assert list(a.identity) == ['a', 'b', 'instance 0', 'instance 1']
    # the same track name in two sessions: two animals
    b = identify_animals([0, 1], [0, 0], ['m', 'm'])
    assert b.count == 2


def test_skeleton_samples_spread_over_the_session_and_packing():
    a = identify_animals(np.zeros(100, int), np.zeros(100, int), [''] * 100)
    frames = np.random.default_rng(0).permutation(100)       # stored out of order
    (picked,) = skeleton_samples(a, frames, 5)
    assert sorted(frames[picked].tolist()) == [0, 25, 50, 74, 99]
    (all_,) = skeleton_samples(a, frames, 1000)
    assert all_.tolist() == list(range(100))
    assert pack_animals([3, 3, 5, 1, 9], 6) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match='skeleton_frames'):
        skeleton_samples(a, frames, 0)


def _rest_keypoints(model, bone_trans):
    out = model(bone_trans=torch.as_tensor(bone_trans, dtype=model.dtype)[None],
                return_vertices=False)
    return out.keypoints[0] - out.joints_kin[0, :1]


def _bone_lengths(model, bone_trans):
    """(J - 1,) rest-pose distances of every joint to its parent: what keypoints seen
    in many poses determine (a bone's direction trades off against its parent's
    rotation, frame by frame)."""
    with torch.no_grad():
        joints = model(bone_trans=torch.as_tensor(bone_trans, dtype=model.dtype)[None],
                       return_vertices=False).joints_kin[0]
    parents = torch.as_tensor(model.parents)[1:].long()
    return (joints[1:] - joints[parents]).norm(dim=-1)


def _two_animal_session(path, frames=10, seed=0):
    """One session, 4 cameras, two animals (tracks 'a' and 'b') with different bone
    translations, interleaved (a, b, a, b, ...) so that every batch mixes them."""
    model = build_body_model(None).double()
    J = model.num_joints
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        rest = _rest_keypoints(model, np.zeros((J, 3)))
    length = float((rest.amax(0) - rest.amin(0)).max())
    bones = {'a': np.zeros((J, 3)), 'b': 0.05 * length * rng.standard_normal((J, 3))}
    # Only bone translations that move a keypoint can be recovered from keypoints (not
    # the root's, which is the body's translation, nor those of joints no keypoint
    # follows): the others stay the model's.
    jac = torch.autograd.functional.jacobian(
        lambda b: _rest_keypoints(model, b), torch.zeros(J, 3, dtype=model.dtype))
    bones['b'][~(jac.abs().sum((0, 1, 3)) > 0).numpy()] = 0.0
    bones['b'][0] = 0.0
    up = up_vector(model.data.up_axis)
    W = H = 512
    focal = 600.0
    cams = ring_cameras(4, target=np.zeros(3), up=up, distance=4 * length,
                        elevations_deg=[35, 20, 35, 20], azimuths_deg=[0, 90, 180, 270],
                        focal=focal, image_size=(W, H))
    rows = []
    for f in range(frames):
        for i, name in enumerate('ab'):
            heading = rng.uniform(-math.pi, math.pi)
            side = (-0.5 if name == 'a' else 0.5) * length
            rows.append(dict(frame=f, instance=i, track=name, bone=bones[name],
                             orient=heading * up, pose=0.2 * rng.standard_normal((J - 1, 3)),
                             transl=side * np.cross(up, np.eye(3)[np.argmin(np.abs(up))])))
    B = len(rows)
    with torch.no_grad():
        out = model(global_orient=torch.as_tensor(np.stack([r['orient'] for r in rows])),
                    body_pose=torch.as_tensor(np.stack([r['pose'] for r in rows])),
                    bone_trans=torch.as_tensor(np.stack([r['bone'] for r in rows])),
                    transl=torch.as_tensor(np.stack([r['transl'] for r in rows])),
                    return_vertices=False)
    kp = out.keypoints
    cam = {k: torch.as_tensor(v)[None].expand(B, *v.shape) for k, v in cams.items()}
    uv = project_points(kp[:, None].expand(B, 4, *kp.shape[1:]), cam['K'], cam['R'],
                        cam['t'], None).numpy()
    Kp = kp.shape[1]
    with DatasetWriter(str(path), keypoint_names=list(model.keypoint_names), num_views=4,
                       units=model.data.units, source='test') as writer:
        writer.add_session('two_mice', [f'cam_{c}' for c in range(4)])
        writer.add_samples(dict(
            session=np.zeros(B, int), frame=np.array([r['frame'] for r in rows]),
            instance=np.array([r['instance'] for r in rows]),
            track=np.array([r['track'] for r in rows], dtype=object),
            valid=np.ones((B, 4), bool), keypoints_2d=uv.astype(np.float32),
            confidence=np.ones((B, 4, Kp), np.float32), K=cam['K'].numpy(),
            R=cam['R'].numpy(), t=cam['t'].numpy(), image_size=cam['image_size'].numpy()))
        writer.commit()
    return model, bones, length


def _config(path, batch_size, **data):
    stage = dict(optimizer=dict(type='LevenbergMarquardt'), ftol=1e-10)
    return dict(
        body_model=dict(type='DemoSMILModel'),
        data=dict(path=str(path), batch_size=batch_size, **data),
        registrant=dict(
            type='SMILRegistrant', init='triangulation', shared=dict(bone_trans=True),
            handlers=[dict(type='Keypoint2DHandler', name='kp2d',
                           loss=dict(type='KeypointMSELoss')),
                      dict(type='PosePriorHandler', name='pose_prior', weight=1e-4,
                           loss=dict(type='PoseL2Prior'))],
            stages=[dict(name='rigid', fit=['global_orient', 'transl'], n_iter=10, **stage),
                    dict(name='pose', fit=['global_orient', 'transl', 'body_pose'],
                         n_iter=30, **stage),
                    # pose and skeleton together (alternating them stalls far from
                    # the truth on this deliberately different skeleton)
                    # with the poses refined by LM in between
                    *[dict(name=name, n_iter=n, **kw) for i in (1, 2) for name, n, kw in (
                        (f'pose_skeleton{i}', 50,
                         dict(fit=['global_orient', 'transl', 'body_pose', 'bone_trans'],
                              optimizer=dict(type='LBFGS', max_iter=30,
                                             line_search_fn='strong_wolfe'))),
                        (f'refine{i}', 30,
                         dict(fit=['global_orient', 'transl', 'body_pose'], **stage)))]]))


@pytest.fixture(scope='module')
def two_animals(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('two_animals')
    model, bones, length = _two_animal_session(tmp / 'two.h5')
    torch.set_num_threads(1)
    results = fit_dataset(_config(tmp / 'two.h5', batch_size=3), tmp / 'fit', progress=False)
    return dict(model=model, bones=bones, length=length, results=results, tmp=tmp)


def test_each_animal_gets_its_own_skeleton_never_a_blend(two_animals):
    """Batches of 3 mix the two animals: each still gets its own skeleton, from all of
    its frames: its bone lengths within 3.5 % of the body length of its own truth (a's,
    the model's own skeleton, to 1e-6), more than 6 % from the other animal's (their
    bones differ by 8 %). The bound is the L-BFGS skeleton stage's convergence on this
    deliberately different skeleton (5 % of the body length per bone), not the grouping."""
    model, bones, length = two_animals['model'], two_animals['bones'], two_animals['length']
    with h5py.File(two_animals['results']) as f:
        animal = f['samples/animal'][:]
        identity = [s.decode() if isinstance(s, bytes) else s for s in f['animals/identity'][:]]
        skeletons = f['animals/param_bone_trans'][:]
        per_sample = f['params/bone_trans'][:]
        assert f['animals/frames_used'][:].tolist() == [10, 10]
        reprojection = f['metrics/reprojection_px'][:]
    assert identity == ['a', 'b']
    assert np.nanmedian(reprojection) < 1.0          # pixels
    np.testing.assert_allclose(per_sample, skeletons[animal], atol=1e-6)
    truth = {n: _bone_lengths(model, bones[n]) for n in 'ab'}
    for a, name in enumerate(identity):
        fitted = _bone_lengths(model, skeletons[a])
        own = float((fitted - truth[name]).abs().max()) / length
        other = float((fitted - truth['b' if name == 'a' else 'a']).abs().max()) / length
        assert own < 0.035, (name, own)
        assert other > 0.06, (name, other)


def test_the_skeleton_does_not_depend_on_the_batch_size(two_animals):
    tmp = two_animals['tmp']
    other = fit_dataset(_config(tmp / 'two.h5', batch_size=20), tmp / 'fit20', progress=False)
    with h5py.File(two_animals['results']) as a, h5py.File(other) as b:
        np.testing.assert_allclose(a['animals/param_bone_trans'][:],
                                   b['animals/param_bone_trans'][:], atol=1e-5)
        np.testing.assert_allclose(a['joints'][:], b['joints'][:], atol=1e-3)


def test_skeleton_frames_is_checked(tmp_path):
    with pytest.raises(FittingConfigError, match='skeleton_frames'):
        fit_dataset(_config(tmp_path / 'x.h5', batch_size=3, skeleton_frames=0), tmp_path)


def test_a_calibrated_skeleton_is_reused(two_animals, tmp_path):
    """data.skeleton: a later session fits with the calibrated skeleton of one animal,
    held fixed (no estimate of its own) or as the start of its estimate."""
    results = two_animals['results']
    with h5py.File(results) as f:
        b = f['animals/param_bone_trans'][1]
    data = two_animals['tmp'] / 'two.h5'
    cfg = _config(data, batch_size=20, skeleton=dict(path=str(results), animal='b'))
    cfg['registrant']['stages'] = cfg['registrant']['stages'][:2] + [
        dict(name='skeleton', fit=['bone_trans'], n_iter=1,
             optimizer=dict(type='LBFGS', max_iter=1))]
    fixed = fit_dataset(cfg, tmp_path / 'fixed', progress=False)
    with h5py.File(fixed) as f:
        np.testing.assert_allclose(f['animals/param_bone_trans'][:], np.stack([b, b]))
        assert f['animals/frames_used'][:].tolist() == [0, 0]
        stages = [r['stage'] for r in json.loads(f.attrs['loss_history']) if 'skipped' in r]
        assert stages and set(stages) == {'skeleton'}
    cfg['data']['skeleton']['mode'] = 'init'
    started = fit_dataset(cfg, tmp_path / 'init', progress=False)
    with h5py.File(started) as f:
        sk = f['animals/param_bone_trans'][:]
    # one tiny step from b's skeleton: near it, not back at the model's own
    assert np.abs(sk - b).max() < 0.2 * np.abs(b).max()
    for bad, match in ((dict(path=str(results), animal='c'), "'c'"),
                       (dict(path=str(results), animal=5), 'out of range'),
                       (dict(path=str(results), mode='prior'), 'mode'),
                       (dict(file=str(results)), 'takes path')):
        cfg['data']['skeleton'] = bad
        with pytest.raises(FittingConfigError, match=match):
            fit_dataset(cfg, tmp_path / 'bad', progress=False)
    assert not (tmp_path / 'bad').exists()
