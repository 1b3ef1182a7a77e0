"""smilfit.evaluation.holdout_report: held-out-view statistics and their table."""
import numpy as np
import pytest

from smilfit.evaluation.holdout_report import format_holdout, holdout_summary


def test_holdout_summary_reports_the_tail_a_median_hides():
    """Nine good frames and one far off: the medians are unchanged, the 90th percentile
    shows the bad frame, per keypoint, per held-out camera and per subset."""
    fit = np.full((10, 2, 2), np.nan)
    fit[:, 1, :] = 1.0                       # view 1 is held out, both keypoints scored
    fit[9, 1, 0] = 50.0                      # one frame's keypoint 0 far off
    fit[8, 1, 0] = 40.0
    dlt = np.where(np.isfinite(fit), 2.0, np.nan)
    cams = np.array([['a', 'b']] * 10, dtype=object)
    report = holdout_summary([dict(views=['a'], fit_px=fit, dlt_px=dlt, camera_names=cams)],
                             ['nose', 'tail'])
    kp = report['keypoints']
    assert kp['nose']['fit_median_px'] == kp['tail']['fit_median_px'] == 1.0
    assert kp['nose']['fit_p90_px'] == pytest.approx(np.percentile(fit[:, 1, 0], 90))
    assert kp['nose']['fit_p90_px'] > 40 and kp['tail']['fit_p90_px'] == 1.0
    assert kp['nose']['dlt_p90_px'] == 2.0
    subset = report['subsets'][0]
    assert subset['fit_p90_px'] == pytest.approx(np.percentile(fit[np.isfinite(fit)], 90))
    assert subset['cameras']['b']['fit_p90_px'] == subset['fit_p90_px']
    text = format_holdout(dict(config='c', dataset='d', samples=10, views=['a', 'b'],
                               k={'1': dict(report, selection=dict(
                                   count=1, total=2, sampled=False, seed=0))}))
    assert 'fit p90' in text
    nose = next(line for line in text.splitlines() if line.strip().startswith('kp nose'))
    assert f'{kp["nose"]["fit_p90_px"]:.2f}' in nose
