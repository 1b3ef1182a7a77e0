"""Instances labelled with left and right exchanged (a pose estimator's frequent error) are
found and fitted exchanged: in a session where one view of one frame has its left/right
labels swapped, the fit with ``exchange_left_right`` finds exactly that instance, reports
it, and fits the frame as if it had been labelled right."""
import h5py
import numpy as np
import torch

from smilfit.handlers import Keypoint2DHandler

from ..conftest import mouse_session_config_on_demo_mouse

SWAPPED = (3, 1)        # (sample, view)


def _session(tmp_path):
    from smilfit.body_models.keypoint_naming import left_right_pairs
    from smilfit.datasets.label_noise import swap_left_right
    from smilfit.datasets.synthetic_animals import generate_animal_session
    data = tmp_path / 'session.h5'
    truth = generate_animal_session(data, num_animals=1, frames=8, num_views=4,
                                    noise_px=0.5, pose_std=0.2, seed=3,
                                    return_keypoints_3d=True)
    with h5py.File(data, 'r+') as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f['keypoint_names'][()]]
        swapped = np.zeros(f['views/keypoints_2d'].shape[:2], bool)
        swapped[SWAPPED] = True
        pairs = left_right_pairs(names)
        for key in ('views/keypoints_2d', 'views/visible', 'views/confidence'):
            if key in f:
                f[key][...] = swap_left_right(f[key][()], swapped, pairs)
    return data, truth['keypoints_3d']


def _fit(tmp_path, data, name, exchange):
    from smilfit.apis.fitting import fit_dataset
    cfg = mouse_session_config_on_demo_mouse(data, batch_size=8)
    for handler in cfg.registrant.handlers:
        if handler['type'] == 'Keypoint2DHandler':
            handler['exchange_left_right'] = exchange
    # (the chains of frames to their minimum: stopped within the labels' errors, one
    # frame's 3D error moves by about the size of the effect compared, 6 %)
    cfg.registrant.stages = [
        dict(s, optimizer=dict(s['optimizer'], noise_tol=0.0))
        if s.get('optimizer', {}).get('type') == 'LevenbergMarquardt' else s
        for s in cfg.registrant.stages]
    return fit_dataset(cfg, tmp_path / name, progress=False)


def test_the_swapped_instance_is_found_reported_and_fitted_exchanged(tmp_path):
    data, truth = _session(tmp_path)
    results = _fit(tmp_path, data, 'exchange', True)
    with h5py.File(results, 'r') as f:
        exchanged = f['metrics/exchanged_views'][()]
        fitted = f['fitted_keypoints_3d'][()]
    assert exchanged.shape == (8, 4) and np.argwhere(exchanged).tolist() == [list(SWAPPED)]
    assert 'sample 3 cam_1' in (results.parent / 'fit_quality.txt').read_text()
    plain = _fit(tmp_path, data, 'plain', False)
    with h5py.File(plain, 'r') as f:
        assert 'metrics/exchanged_views' not in f
        fitted_plain = f['fitted_keypoints_3d'][()]
    frame = SWAPPED[0]
    error = np.linalg.norm(fitted[frame] - truth[frame], axis=-1)
    error_plain = np.linalg.norm(fitted_plain[frame] - truth[frame], axis=-1)
    assert np.median(error) < np.median(error_plain)


def test_a_mirrored_model_is_not_taken_for_swapped_labels():
    """Where most of a sample's views prefer the exchange, the model is the one
    mirrored: nothing is exchanged."""
    handler = Keypoint2DHandler('kp2d', exchange_left_right=True)
    handler.setup(_Model(), dict(keypoint_names=['a_L', 'a_R', 'nose']))
    pts = torch.tensor([[[1.0, 0, 5], [-1.0, 0, 5], [0, 1.0, 5]]], dtype=torch.float64)
    K = torch.eye(3, dtype=torch.float64).expand(1, 3, 3, 3) * 100
    K = K.clone()
    K[..., 2, 2] = 1
    R = torch.eye(3, dtype=torch.float64).expand(1, 3, 3, 3)
    t = torch.zeros(1, 3, 3, dtype=torch.float64)
    labels = (pts[:, None, :, :2] / pts[:, None, :, 2:]) * 100
    labels = labels.expand(1, 3, 3, 2).clone()
    obs = dict(keypoints_2d=labels, K=K, R=R, t=t)
    one = labels.clone()
    one[0, 0, [0, 1]] = one[0, 0, [1, 0]]                 # one of three views swapped
    found = handler.exchanged_views(pts, dict(obs, keypoints_2d=one), {})
    assert found.tolist() == [[True, False, False]]
    two = labels.clone()
    two[0, :2, [0, 1]] = two[0, :2, [1, 0]]               # two of three: the model
    assert not handler.exchanged_views(pts, dict(obs, keypoints_2d=two), {}).any()
    swapped = handler.with_exchanged(dict(obs, keypoints_2d=one), found)
    torch.testing.assert_close(swapped['keypoints_2d'], labels)


class _Model:
    """The least a keypoint handler's setup needs: three keypoints that are joints."""
    keypoint_names = ['a_L', 'a_R', 'nose']
    joint_names = ['a_L', 'a_R', 'nose']
    device = None
