"""smilfit.evaluation.fit_quality: per-camera/keypoint statistics and the outlier rule."""
import numpy as np

from smilfit.evaluation.fit_quality import fit_quality, format_fit_quality


def _errors(camera_scale):
    rng = np.random.default_rng(0)
    e = np.abs(rng.normal(size=(50, len(camera_scale), 4))) * np.asarray(camera_scale)[None, :, None]
    e[0, 0, 0] = np.nan  # unobserved
    return e


def test_statistics_match_a_direct_computation():
    e = _errors([2.0, 2.0, 2.0])
    names = [['a', 'b', 'c']] * 50
    report = fit_quality(e, names, ['k0', 'k1', 'k2', 'k3'])
    a = e[:, 0][np.isfinite(e[:, 0])]
    assert report['cameras']['a']['points'] == 199
    assert np.isclose(report['cameras']['a']['median_px'], np.median(a))
    assert np.isclose(report['cameras']['a']['p90_px'], np.percentile(a, 90))
    assert report['outlier_cameras'] == [] and report['outlier_keypoints'] == []


def test_a_camera_far_above_the_rest_is_named_and_failed_samples_excluded():
    e = _errors([2.0, 2.0, 20.0, 2.0])
    failed = np.zeros(50, bool)
    failed[:5] = True
    report = fit_quality(e, [['a', 'b', 'c', 'd']] * 50, list('wxyz'), failed=failed)
    assert report['outlier_cameras'] == ['c']
    assert report['failed_samples'] == [0, 1, 2, 3, 4]
    assert report['cameras']['a']['points'] == 45 * 4
    text = format_fit_quality(report)
    assert 'Check the calibration of camera(s) c' in text and '5 of 50 samples failed' in text


def test_sub_pixel_differences_are_never_flagged():
    e = _errors([0.01, 0.01, 0.2])  # 20x, but a fifth of a pixel
    assert fit_quality(e, [['a', 'b', 'c']] * 50, list('wxyz'))['outlier_cameras'] == []
