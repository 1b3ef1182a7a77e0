"""benchmarks/video_batches.py: the shipped config on one animal's video, by batch size, with
and without the motion prior, beside DLT."""
import numpy as np
import pytest

from ..conftest import benchmark_module, record_dataset_fits


def test_errors_are_in_percent_of_the_body_length_over_the_points_given():
    bench = benchmark_module('video_batches')
    truth = dict(keypoints_3d=np.zeros((2, 3, 3)), length=2.0)
    points = np.zeros((2, 3, 3))
    points[..., 0] = [[0.02, 0.04, np.nan], [0.06, 0.08, 0.10]]
    median, p90 = bench.error_stats(points, truth)
    assert median == pytest.approx(3.0)               # 0.06 of 2.0, the middle of five
    assert p90 == pytest.approx(np.percentile([1, 2, 3, 4, 5], 90))


# 24 frames are too few pairs to tell a video by: the handler says so
@pytest.mark.filterwarnings('ignore:handler .motion.. the chains of consecutive frames')
def test_each_batch_size_is_fitted_with_and_without_the_prior_beside_dlt(tmp_path,
                                                                         monkeypatch):
    bench = benchmark_module('video_batches')
    seen = record_dataset_fits(monkeypatch, lambda cfg: (
        cfg.data['batch_size'], any(h['type'] == 'MotionPriorHandler'
                                    for h in cfg.registrant.handlers)))
    argv = ['--frames', '24', '--batch-sizes', '12', '--noise', '1', '--peers', 'none',
            '--tables', str(tmp_path)]
    assert bench.main(argv) == 0
    assert seen == [(12, False), (12, True)]
    lines = (tmp_path / 'video_batches.md').read_text().splitlines()
    assert lines[0].startswith('<!-- written by `python benchmarks/video_batches.py --frames 24')
    rows = [[cell.strip() for cell in line.strip('|').split('|')] for line in lines[4:]]
    assert [row[1] for row in rows] == ['DLT', 'fit, frames alone', 'fit, motion prior']
    assert rows[0][2:6] == ['', '', '', '']
    assert rows[1][2] == rows[2][2] == '12' and rows[1][5] == ''
    # the ratio is of the unrounded times: within what the table's 0.1 s rounding allows
    on, off = float(rows[2][3]), float(rows[1][3])
    assert (on - 0.05) / (off + 0.05) - 0.005 <= float(rows[2][5]) <= \
        (on + 0.05) / (off - 0.05) + 0.005
    for row in rows:
        # 1 px label errors: the 3D error is a small share of the body length
        assert 0.0 < float(row[6]) <= float(row[7]) < 10.0


def test_bad_arguments_are_refused_before_anything_runs():
    bench = benchmark_module('video_batches')
    with pytest.raises(SystemExit):
        bench.main(['--batch-sizes', '0'])
    with pytest.raises(SystemExit):
        bench.main(['--noise', '-1'])
