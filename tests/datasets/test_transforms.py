"""Transforms: camera-consistent geometric augmentation, flips, resizing, photometric
augmentation and packing."""
import copy

import cv2
import numpy as np
import pytest
import torch
from mmengine.dataset import Compose, default_collate

from smilfit.cameras.projection import project_points
from smilfit.datasets.synthetic import ring_cameras
from smilfit.datasets.transforms import (GeometricAugment, PackInputs, PhotometricAugment,
                                         ResizeViews, apply_view_affine)
from smilfit.registry import TRANSFORMS

NAMES = ['nose', 'tail', 'ear_L', 'ear_R', 'paw_L', 'paw_R']
PAIRS = [('ear_L', 'ear_R'), ('paw_L', 'paw_R')]
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255],
                    [0, 255, 255]], np.uint8)
W, H = 120, 100


def reproject(s):
    """(C, K, 2) projection of the sample's 3D keypoints through its (updated) cameras."""
    P = torch.as_tensor(np.asarray(s['keypoints_3d'], np.float64))
    cams = [torch.as_tensor(np.asarray(s[k], np.float64)) for k in ('K', 'R', 't', 'dist')]
    return project_points(P[None], *cams).numpy()


def make_sample(C=2, distorted=True):
    """Keypoints in front of a small rig; each drawn as a disc of its own colour."""
    cams = ring_cameras(C, target=np.zeros(3), up=np.array([0.0, 0.0, 1.0]), distance=300.0,
                        elevations_deg=[30.0, 15.0, 50.0][:C],
                        azimuths_deg=[0.0, 100.0, 220.0][:C], focal=160.0,
                        image_size=(W, H))
    dist = np.zeros((C, 5))
    if distorted:
        dist[:] = [-0.08, 0.01, 0.002, -0.003, 0.0]
    kp3d = np.array([[40.0, 0, 10], [-45, 5, 5], [20, 18, 25], [20, -18, 25], [5, 30, -10],
                     [5, -30, -10]])
    s = dict(K=cams['K'], R=cams['R'], t=cams['t'], dist=dist,
             image_size=cams['image_size'].astype(np.int32), crop=np.stack([np.eye(3)] * C),
             keypoints_3d=kp3d.astype(np.float32), keypoint_names=list(NAMES),
             view_valid=np.ones(C, bool), sample_idx=3, session='s0', frame=7)
    s['keypoints_2d'] = reproject(s).astype(np.float32)
    s['visible'] = np.ones((C, len(NAMES)), bool)
    s['confidence'] = np.ones((C, len(NAMES)), np.float32)
    images = np.full((C, H, W, 3), 60, np.uint8)
    masks = np.zeros((C, H, W), bool)
    for c in range(C):
        for k, (x, y) in enumerate(s['keypoints_2d'][c]):
            assert 6 < x < W - 7 and 6 < y < H - 7
            centre = (int(round(x)), int(round(y)))
            cv2.circle(images[c], centre, 4, COLOURS[k].tolist(), -1)
            mask = masks[c].astype(np.uint8)
            cv2.circle(mask, centre, 4, 1, -1)
            masks[c] = mask > 0
    s['images'], s['masks'] = images, masks
    return s


def colour_at(image, xy):
    x, y = int(round(float(xy[0]))), int(round(float(xy[1])))
    return image[y, x].astype(int)


@pytest.mark.parametrize('distorted', [False, True])
@pytest.mark.parametrize('camera_update', ['roll', 'K'])
def test_geometric_augment_keeps_cameras_consistent(distorted, camera_update):
    s = make_sample(distorted=distorted)
    out = GeometricAugment(scale_range=(0.8, 1.25), rotation=30.0, translate=0.05,
                           camera_update=camera_update, seed=1)(copy.deepcopy(s))
    assert not np.allclose(out['keypoints_2d'], s['keypoints_2d'])     # it did something
    np.testing.assert_allclose(reproject(out), out['keypoints_2d'], atol=1e-4)
    for c in range(2):
        A = out['crop'][c]                           # crop' = A crop and crop started at I
        np.testing.assert_allclose(A[2], [0, 0, 1])
        P = out['K'][c] @ np.c_[out['R'][c], out['t'][c]]
        np.testing.assert_allclose(P, A @ s['K'][c] @ np.c_[s['R'][c], s['t'][c]], atol=1e-9)
        if camera_update == 'K':
            np.testing.assert_allclose(out['K'][c], A @ s['K'][c], atol=1e-9)
        else:                                        # canonical K, camera rolled
            assert out['K'][c][1, 0] == 0 and out['K'][c][2].tolist() == [0, 0, 1]
            assert out['K'][c][0, 0] > 0 and out['K'][c][1, 1] > 0
            np.testing.assert_allclose(out['R'][c] @ out['R'][c].T, np.eye(3), atol=1e-12)
            assert not np.allclose(out['R'][c], s['R'][c])
    if camera_update == 'roll':                      # smilfit's cameras accept the result
        from smilfit.cameras.pinhole import PinholeCameras
        cams = PinholeCameras(K=out['K'], R=out['R'], t=out['t'], dist=out['dist'],
                              dtype=torch.float64)
        uv = cams.project(torch.as_tensor(out['keypoints_3d'], dtype=torch.float64))
        np.testing.assert_allclose(uv.detach().numpy(), out['keypoints_2d'], atol=1e-4)
    # Pixels moved with the keypoints: the colour at a transformed keypoint is the
    # colour of its disc; the mask is set there.
    for c in range(2):
        for k in range(len(NAMES)):
            if out['visible'][c, k]:
                np.testing.assert_allclose(colour_at(out['images'][c], out['keypoints_2d'][c, k]),
                                           COLOURS[k], atol=3)
                assert colour_at(out['masks'][c][..., None], out['keypoints_2d'][c, k])[0]
    assert out['images'].shape == s['images'].shape and out['masks'].dtype == bool
    assert out['flipped'] is False


def test_geometric_augment_is_seeded_per_sample():
    s = make_sample()
    aug = GeometricAugment(rotation=20.0, seed=5)
    a, b = aug(copy.deepcopy(s)), aug(copy.deepcopy(s))
    np.testing.assert_array_equal(a['K'], b['K'])
    other = dict(copy.deepcopy(s), sample_idx=4)
    assert not np.allclose(aug(other)['K'], a['K'])
    shared = GeometricAugment(rotation=20.0, seed=5, same_for_all_views=True)(copy.deepcopy(s))
    A = shared['crop']
    np.testing.assert_allclose(A[0], A[1])


def test_keypoints_leaving_the_image_keep_coordinates_but_become_invisible():
    s = make_sample()
    A = np.array([[1.0, 0, 70.0], [0, 1.0, 0.0], [0, 0, 1]])         # shift right by 70 px
    before = s['keypoints_2d'][0].copy()
    apply_view_affine(s, 0, A)
    np.testing.assert_allclose(s['keypoints_2d'][0], before + [70.0, 0.0], atol=1e-4)
    inside = before[:, 0] + 70.0 < W - 0.5
    np.testing.assert_array_equal(s['visible'][0], inside)
    assert (~inside).any() and inside.any()
    assert s['visible'][1].all()                                     # other view untouched
    np.testing.assert_allclose(reproject(s), s['keypoints_2d'], atol=1e-4)


def test_flip_swaps_pairs_and_stays_a_proper_camera():
    s = make_sample()
    out = GeometricAugment(scale_range=(1.0, 1.0), rotation=0.0, translate=0.0, flip_prob=1.0,
                           flip_pairs=PAIRS, seed=0)(copy.deepcopy(s))
    assert out['flipped'] is True
    np.testing.assert_allclose(reproject(out), out['keypoints_2d'], atol=1e-4)
    for c in range(2):
        assert np.linalg.det(out['R'][c]) == pytest.approx(1.0)
        assert out['K'][c][0, 0] > 0 and out['K'][c][1, 1] > 0
    i, j = NAMES.index('ear_L'), NAMES.index('ear_R')
    np.testing.assert_allclose(out['keypoints_2d'][:, i, 0], W - 1 - s['keypoints_2d'][:, j, 0],
                               atol=1e-4)
    np.testing.assert_allclose(out['keypoints_2d'][:, i, 1], s['keypoints_2d'][:, j, 1],
                               atol=1e-4)
    np.testing.assert_array_equal(out['images'], s['images'][:, :, ::-1])
    # The disc now under 'ear_L' is the one drawn for 'ear_R'.
    np.testing.assert_array_equal(colour_at(out['images'][0], out['keypoints_2d'][0, i]),
                                  COLOURS[j])
    # Flip combined with a random affine stays consistent too.
    both = GeometricAugment(rotation=25.0, flip_prob=1.0, flip_pairs=[(2, 3), (4, 5)],
                            seed=3)(copy.deepcopy(s))
    np.testing.assert_allclose(reproject(both), both['keypoints_2d'], atol=1e-4)


def test_flip_needs_pairs():
    with pytest.raises(ValueError, match='flip_pairs'):
        GeometricAugment(flip_prob=0.5)
    s = make_sample()
    with pytest.raises(KeyError, match='nope'):
        GeometricAugment(flip_prob=1.0, flip_pairs=[('nope', 'ear_R')])(s)


@pytest.mark.parametrize('keep_ratio', [False, True])
def test_resize_views(keep_ratio):
    s = make_sample()
    out = ResizeViews((64, 64), keep_ratio=keep_ratio)(copy.deepcopy(s))
    assert out['images'].shape == (2, 64, 64, 3) and out['masks'].shape == (2, 64, 64)
    np.testing.assert_array_equal(out['image_size'], [[64, 64], [64, 64]])
    np.testing.assert_allclose(reproject(out), out['keypoints_2d'], atol=1e-4)
    for c in range(2):
        for k in range(len(NAMES)):
            np.testing.assert_allclose(colour_at(out['images'][c], out['keypoints_2d'][c, k]),
                                       COLOURS[k], atol=40)
    if keep_ratio:                                   # 120 x 100 -> 64 x 53, padded top/bottom
        assert np.all(out['images'][:, :5] == 0)
        np.testing.assert_allclose(out['K'][0][0, 0], out['K'][0][1, 1], rtol=0.02)


def test_resize_views_makes_mixed_sizes_stackable():
    s = make_sample()
    s['images'] = [s['images'][0], cv2.resize(s['images'][1], (60, 50))]
    s['masks'] = [s['masks'][0], cv2.resize(s['masks'][1].astype(np.uint8), (60, 50)) > 0]
    s['image_size'] = np.array([[W, H], [60, 50]])
    with pytest.raises(ValueError, match='ResizeViews'):
        PackInputs()(copy.deepcopy(s))
    out = ResizeViews(32)(s)
    assert out['images'].shape == (2, 32, 32, 3)


def test_photometric_augment_changes_only_images():
    s = make_sample()
    aug = PhotometricAugment(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05,
                             noise_std=5.0, blur_prob=1.0, seed=0)
    out = aug(copy.deepcopy(s))
    again = aug(copy.deepcopy(s))
    np.testing.assert_array_equal(out['images'], again['images'])
    assert out['images'].dtype == np.uint8 and out['images'].shape == s['images'].shape
    assert np.abs(out['images'].astype(int) - s['images']).mean() > 1
    for key in ('keypoints_2d', 'K', 'R', 't', 'masks', 'visible'):
        np.testing.assert_array_equal(out[key], s[key])
    no_images = {k: v for k, v in s.items() if k != 'images'}
    assert 'images' not in aug(no_images)


def test_pack_inputs_and_collate():
    pipeline = Compose([TRANSFORMS.build(cfg) for cfg in (
        dict(type='GeometricAugment', seed=0), dict(type='PhotometricAugment'),
        dict(type='ResizeViews', size=(64, 48)), dict(type='PackInputs'))])
    batch = default_collate([pipeline(make_sample()), pipeline(make_sample())])
    x = batch['inputs']
    assert x.shape == (2, 2, 3, 48, 64) and x.dtype == torch.float32
    assert -3 < float(x.mean()) < 3
    ds = batch['data_samples']
    assert ds['keypoints_2d'].shape == (2, 2, 6, 2) and ds['K'].shape == (2, 2, 3, 3)
    assert ds['visible'].dtype == torch.bool and ds['masks'].shape == (2, 2, 48, 64)
    assert ds['image_size'].dtype == torch.int64 and ds['keypoints_3d'].shape == (2, 6, 3)
    assert list(ds['session']) == ['s0', 's0'] and ds['frame'].tolist() == [7, 7]
    # Unnormalised packing and a single-view sample (view axis dropped).
    s = make_sample()
    s['single_view'] = True
    for key in ('images', 'masks', 'keypoints_2d', 'visible', 'confidence', 'K', 'R', 't',
                'dist', 'image_size', 'crop', 'view_valid'):
        s[key] = s[key][:1]
    packed = PackInputs(mean=None, std=None)(s)
    assert packed['inputs'].shape == (3, H, W) and float(packed['inputs'].max()) <= 1.0
    assert packed['data_samples']['K'].shape == (3, 3)
    assert packed['data_samples']['keypoints_2d'].shape == (6, 2)


def test_transforms_are_registered():
    for name in ('PhotometricAugment', 'GeometricAugment', 'ResizeViews', 'PackInputs'):
        cfg = dict(type=name, size=32) if name == 'ResizeViews' else dict(type=name)
        assert type(TRANSFORMS.build(cfg)).__name__ == name
