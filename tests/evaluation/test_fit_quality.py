"""smilfit.evaluation.fit_quality: per-camera/keypoint statistics and the outlier rule."""
import numpy as np

from smilfit.evaluation.fit_quality import PointErrorTable, fit_quality, format_fit_quality


def _errors(camera_scale):
    rng = np.random.default_rng(0)
    e = np.abs(rng.normal(size=(50, len(camera_scale), 4))) * np.asarray(camera_scale)[None, :, None]
    e[0, 0, 0] = np.nan  # unobserved
    return e


def test_statistics_match_a_direct_computation_within_one_histogram_bin():
    e = _errors([2.0, 2.0, 2.0])
    names = [['a', 'b', 'c']] * 50
    report = fit_quality(e, names, ['k0', 'k1', 'k2', 'k3'])
    a = e[:, 0][np.isfinite(e[:, 0])]
    assert report['cameras']['a']['points'] == 199
    # (bins 1/64 of an octave wide: 1.1 % of the value)
    assert np.isclose(report['cameras']['a']['median_px'], np.median(a), rtol=0.011)
    assert np.isclose(report['cameras']['a']['p90_px'], np.percentile(a, 90), rtol=0.011)
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


def test_a_camera_hidden_by_a_worse_one_is_named_as_a_hint():
    """A camera 100x off raises the others' 90th percentile so far that one 12x off is not
    named; once the first is left out it stands out, and the report says so."""
    e = _errors([1.0, 1.0, 1.0, 12.0, 100.0])
    report = fit_quality(e, [['a', 'b', 'c', 'd', 'e']] * 50, list('wxyz'))
    assert report['outlier_cameras'] == ['e']
    assert report['masked_outlier_cameras'] == ['d']
    text = format_fit_quality(report)
    assert 'Check the calibration of camera(s) e' in text
    assert 'Without them, camera(s) d (' in text and 'check them as well' in text
    # with the worse camera gone the rule names the other directly, with no hint
    alone = fit_quality(e[:, :4], [['a', 'b', 'c', 'd']] * 50, list('wxyz'))
    assert alone['outlier_cameras'] == ['d'] and alone['masked_outlier_cameras'] == []
    # a camera is only ever compared with two or more others: no hint from a pair
    pair = fit_quality(e[:, 2:], [['c', 'd', 'e']] * 50, list('wxyz'))
    assert pair['outlier_cameras'] == ['e'] and pair['masked_outlier_cameras'] == []
    assert 'Without them' not in format_fit_quality(pair)


def test_a_keypoint_one_camera_labels_elsewhere_is_named_with_that_camera():
    """One keypoint far off in one camera only (a left/right swap in that view): not a bad
    camera nor a bad keypoint overall, but named with its camera."""
    e = _errors([1.0, 1.0, 1.0, 1.0])
    e[:, 1, 2] += 30.0                       # camera b, keypoint y
    report = fit_quality(e, [['a', 'b', 'c', 'd']] * 50, list('wxyz'))
    assert report['outlier_cameras'] == [] and report['outlier_keypoints'] == []
    assert list(report['outlier_camera_keypoints']) == ['b']
    assert list(report['outlier_camera_keypoints']['b']) == ['y']
    assert report['outlier_camera_keypoints']['b']['y'] > 29
    text = format_fit_quality(report)
    assert 'In camera b, keypoint(s) y (' in text
    # and how a network trained on the fit leaves them out
    assert "fit_outlier_labels='camera_keypoints'" in text
    # a camera named as off is left out of the comparison; two cameras cannot tell
    assert fit_quality(e[:, :2], [['a', 'b']] * 50, list('wxyz'))[
        'outlier_camera_keypoints'] == {}
    clean = fit_quality(_errors([1.0, 1.0, 1.0]), [['a', 'b', 'c']] * 50, list('wxyz'))
    assert clean['outlier_camera_keypoints'] == {}


def test_a_few_points_off_by_chance_name_nothing():
    """Three far-off points of one camera and keypoint are what chance gives among many
    (camera, keypoint) pairs; fifty are not."""
    e = _errors([1.0, 1.0, 1.0, 1.0])
    e[:, 1, 2] = np.nan
    e[:3, 1, 2] = 30.0                       # three views only
    names = [['a', 'b', 'c', 'd']] * 50
    assert fit_quality(e, names, list('wxyz'))['outlier_camera_keypoints'] == {}
    e[:, 1, 2] = 30.0
    assert list(fit_quality(e, names, list('wxyz'))['outlier_camera_keypoints']) == ['b']


def test_a_keypoint_off_in_every_view_is_named_beside_a_far_off_camera():
    """A keypoint off in every camera (a wrong joint in the lookup) is named, also when a
    far-off camera's errors would raise every keypoint's 90th percentile."""
    e = _errors([1.0, 1.0, 1.0, 1.0])
    e[:, :, 3] *= 20
    names = [['a', 'b', 'c', 'd']] * 50
    assert fit_quality(e, names, list('wxyz'))['outlier_keypoints'] == ['z']
    e[:, 3] *= 100                            # camera d far off as well
    report = fit_quality(e, names, list('wxyz'))
    assert report['outlier_cameras'] == ['d'] and report['outlier_keypoints'] == ['z']


def test_a_fit_gathered_batch_by_batch_reports_as_all_at_once():
    """The merge adds a long fit's batches one at a time: the report is the same as of
    the whole fit's errors, with failed samples numbered over all batches and a camera
    seen only in failed samples listed without points."""
    e = _errors([2.0, 2.0, 20.0, 2.0])
    names = np.array([['a', 'b', 'c', 'd']] * 50, dtype=object)
    names[30:, 3] = 'e'
    failed = np.zeros(50, bool)
    failed[[3, 31]] = True
    names[31, 0] = 'only_failed'
    whole = fit_quality(e, names, list('wxyz'), failed=failed)
    table = PointErrorTable(list('wxyz'))
    for lo, hi in [(0, 7), (7, 30), (30, 31), (31, 50)]:
        table.add(e[lo:hi], names[lo:hi], failed[lo:hi])
    assert table.report() == whole
    assert whole['failed_samples'] == [3, 31] and whole['outlier_cameras'] == ['c']
    assert whole['cameras']['only_failed']['points'] == 0
    assert whole['cameras']['e']['points'] == 19 * 4     # (sample 31 failed)


def test_the_table_s_memory_does_not_grow_with_the_recording():
    rng = np.random.default_rng(1)
    table = PointErrorTable(list('wxyz'))
    table.add(np.abs(rng.normal(size=(10, 3, 4))), [['a', 'b', 'c']] * 10)
    size = table._counts.nbytes + table._low.nbytes + table._high.nbytes
    for _ in range(20):
        table.add(np.abs(rng.normal(size=(1000, 3, 4))), [['c', 'a', 'b']] * 1000)
    assert table._counts.nbytes + table._low.nbytes + table._high.nbytes == size
    assert table.report()['overall']['points'] == 10 * 12 + 20 * 1000 * 12


def test_negative_errors_are_refused():
    import pytest
    e = _errors([1.0, 1.0, 1.0])
    e[2, 1, 1] = -1.0
    with pytest.raises(ValueError, match='negative'):
        fit_quality(e, [['a', 'b', 'c']] * 50, list('wxyz'))
