"""data.views / data.exclude_views: which cameras a fit uses."""
import numpy as np
import pytest

from smilfit.datasets.view_selection import (ViewSelectionError, camera_universe,
                                             select_views, view_mask)

# two sessions with the cameras in other slots, the second with one camera fewer
CAMERAS = [['back', 'mid', 'side', 'top'], ['top', 'back', 'mid']]


def test_mask_follows_names_not_slots():
    keep = view_mask(CAMERAS, 4, views=['back', 'top'])
    np.testing.assert_array_equal(keep, [[1, 0, 0, 1], [1, 1, 0, 0]])
    drop = view_mask(CAMERAS, 4, exclude_views=['side', 'mid'])
    np.testing.assert_array_equal(drop, [[1, 0, 0, 1], [1, 1, 0, 0]])
    # a single name given as a string is that camera
    np.testing.assert_array_equal(view_mask(CAMERAS, 4, exclude_views='side'),
                                  [[1, 1, 0, 1], [1, 1, 1, 0]])
    assert view_mask(CAMERAS, 4) is None
    assert camera_universe(CAMERAS) == ['back', 'mid', 'side', 'top']


def test_unknown_names_are_named_with_the_available_cameras():
    with pytest.raises(ViewSelectionError) as err:
        view_mask(CAMERAS, 4, views=['back', 'sdie'], where='data')
    message = str(err.value)
    assert "data.views" in message and "'sdie'" in message
    assert "'back', 'mid', 'side', 'top'" in message
    with pytest.raises(ViewSelectionError, match=r"data.exclude_views .*'front'"):
        view_mask(CAMERAS, 4, exclude_views=['front'])


@pytest.mark.parametrize('kwargs, match', [
    (dict(views=['back'], exclude_views=['side']), 'both set'),
    (dict(views=[]), 'empty'),
    (dict(views=[3]), 'camera names'),
    (dict(views=5), 'list of camera names'),
    (dict(views=['side']), "session\\(s\\) s1 without any camera"),
])
def test_bad_selections_are_errors(kwargs, match):
    with pytest.raises(ViewSelectionError, match=match):
        view_mask(CAMERAS, 4, session_names=['s0', 's1'], **kwargs)


def _observations(B=3, C=4, K=5, seed=0):
    rng = np.random.default_rng(seed)
    return dict(keypoints_2d=rng.normal(size=(B, C, K, 2)).astype(np.float32),
                confidence=rng.uniform(0.5, 1.0, (B, C, K)).astype(np.float32),
                visible=np.ones((B, C, K), bool), view_valid=np.ones((B, C), bool),
                mask_valid=np.ones((B, C), bool),
                K=np.tile(np.eye(3), (B, C, 1, 1)), R=np.tile(np.eye(3), (B, C, 1, 1)),
                t=rng.normal(size=(B, C, 3)))


def test_select_views_removes_the_other_views_consistently():
    obs = _observations()
    before = {k: v.copy() for k, v in obs.items()}
    keep = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]], bool)
    out = select_views(obs, keep)
    for k in obs:                                  # the input is not modified
        np.testing.assert_array_equal(obs[k], before[k])
    np.testing.assert_array_equal(out['keypoints_2d'][keep], obs['keypoints_2d'][keep])
    np.testing.assert_array_equal(out['confidence'][keep], obs['confidence'][keep])
    assert np.isnan(out['keypoints_2d'][~keep]).all()
    assert (out['confidence'][~keep] == 0).all() and not out['visible'][~keep].any()
    np.testing.assert_array_equal(out['view_valid'], keep)
    np.testing.assert_array_equal(out['mask_valid'], keep)
    for k in ('K', 'R', 't'):                      # cameras stay: the C axis is kept
        np.testing.assert_array_equal(out[k], obs[k])
    # an already invalid view stays invalid
    obs['view_valid'][0, 0] = False
    assert not select_views(obs, keep)['view_valid'][0, 0]
    assert select_views(obs, None)['keypoints_2d'] is obs['keypoints_2d']
    with pytest.raises(ValueError, match=r'\(3, 4\)'):
        select_views(obs, keep[:, :3])


def test_given_3d_points_go_where_a_view_they_were_triangulated_with_goes():
    obs = _observations()
    obs['keypoints_3d'] = np.ones((3, 5, 3), np.float32)
    obs['view_valid'][2, 0] = False              # sample 2 never had view 0
    keep = np.array([[1, 1, 1, 1], [1, 1, 0, 1], [0, 1, 1, 1]], bool)
    out = select_views(obs, keep)
    assert out['keypoints_3d'].dtype == np.float32
    assert np.isfinite(out['keypoints_3d'][[0, 2]]).all()    # nothing valid removed
    assert np.isnan(out['keypoints_3d'][1]).all()
    assert np.isfinite(obs['keypoints_3d']).all()              # the input as it was


def test_fit_dataset_leaves_excluded_views_out(tmp_path):
    import h5py

    from smilfit.apis.fitting import FittingConfigError, fit_dataset, prepare_data

    from ..conftest import demo_fit_config
    cfg = demo_fit_config(tmp_path, batch_size=4)
    cfg.data.synthetic.update(frames_per_session=4, image_size=96)
    prepare_data(cfg, progress=False)
    cfg.data.exclude_views = ['cam_1']
    results = fit_dataset(cfg, tmp_path / 'fit', progress=False)
    with h5py.File(results) as f:
        err = f['metrics/reprojection_point_px'][:]
    assert np.isnan(err[:, 1]).all()               # cam_1 is not part of the fit
    assert np.isfinite(err[:, [0, 2]]).any() and np.nanmedian(err[:, [0, 2]]) < 1.0
    # a typo fails before the work dir is made, naming the cameras
    cfg.data.exclude_views = ['cam_9']
    with pytest.raises(ViewSelectionError, match="'cam_9'.*'cam_0', 'cam_1', 'cam_2'"):
        fit_dataset(cfg, tmp_path / 'typo', progress=False)
    assert not (tmp_path / 'typo').exists()
    cfg.data.pop('exclude_views')
    cfg.data.view = ['cam_0']
    with pytest.raises(FittingConfigError, match="data.view .*'views'"):
        fit_dataset(cfg, tmp_path / 'typo', progress=False)
