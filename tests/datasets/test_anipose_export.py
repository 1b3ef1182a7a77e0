"""A fit's 3D keypoints in anipose's CSV and sleap-anipose's points3d.h5 layouts."""
import csv

import h5py
import numpy as np
import pytest

from smilfit.datasets import DatasetReader
from smilfit.datasets.anipose_export import export_fit_anipose

from ..conftest import SHARED, demo_fit


@pytest.fixture(scope='module')
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('anipose')
    cfg, results = demo_fit(tmp)
    return results, cfg.data.path, export_fit_anipose(results, tmp / 'anipose')


def test_csv_has_anipose_columns_and_the_fitted_points(fitted):
    results, data, files = fitted
    reader = DatasetReader(data)
    names = list(reader.keypoint_names)
    table = files[0]
    assert table.name == f'{reader.session_names[0]}.csv'
    with open(table, newline='') as f:
        rows = list(csv.DictReader(f))
        header = list(rows[0])
    expected = [f'{k}_{c}' for k in names for c in ('x', 'y', 'z', 'error', 'ncams', 'score')]
    expected += [f'M_{i}{j}' for i in range(3) for j in range(3)]
    assert header == expected + ['center_0', 'center_1', 'center_2', 'fnum']
    with h5py.File(results) as f:
        points = f['fitted_keypoints_3d'][:]
        frames = f['samples/frame'][:]
        point_px = f['metrics/reprojection_point_px'][:]
    assert [int(r['fnum']) for r in rows] == list(range(frames.max() + 1))
    batch = reader.read(np.arange(len(points)), keys=['visible', 'valid'])
    seen = batch['visible'] & batch['valid'][..., None] & np.isfinite(point_px)
    for i, fr in enumerate(frames):
        row = rows[fr]
        for k, name in enumerate(names):
            xyz = [row[f'{name}_{c}'] for c in 'xyz']
            if np.isfinite(points[i, k]).all():
                np.testing.assert_allclose([float(v) for v in xyz], points[i, k], rtol=1e-6)
            n = int(seen[i, :, k].sum())
            if n:
                assert float(row[f'{name}_ncams']) == n
                assert float(row[f'{name}_error']) == pytest.approx(
                    point_px[i, :, k][seen[i, :, k]].mean(), rel=1e-5)
            else:    # as anipose's optim mode: 0 views, no error, no score
                assert float(row[f'{name}_ncams']) == 0
                assert row[f'{name}_error'] == '' and row[f'{name}_score'] == ''
        assert float(row['M_00']) == 1.0 and float(row['M_01']) == 0.0


def test_points3d_has_the_sleap_anipose_layout(fitted):
    results, data, files = fitted
    path = files[1]
    with h5py.File(path) as f:
        tracks = f['tracks']
        assert tracks.dtype == np.float64 and tracks.ndim == 4 and tracks.shape[1:] == (
            1, len(DatasetReader(data).keypoint_names), 3)
        ours = dict(tracks.attrs)
    reference = SHARED / 'data' / 'sleap_anipose_minimal_session' / 'minimal_session' / \
        'points3d.h5'
    if reference.exists():
        with h5py.File(reference) as f:
            assert list(f.keys()) == ['tracks'] and f['tracks'].ndim == 4
            assert f['tracks'].dtype == np.float64 and dict(f['tracks'].attrs) == ours


def test_anipose_analysis_code_reads_the_csv(fitted):
    """What anipose's own readers do with a pose-3d CSV (label_videos_3d, project_2d,
    compute_angles: pandas, body parts from the ``_error`` columns, M and center as column
    means) gives back the fitted points."""
    pd = pytest.importorskip('pandas')
    results, data, files = fitted
    frame = pd.read_csv(files[0])
    bodyparts = [c.replace('_error', '') for c in frame.columns if '_error' in c]
    assert bodyparts == list(DatasetReader(data).keypoint_names)
    points = np.array([np.array(frame.loc[:, (bp + '_x', bp + '_y', bp + '_z')])
                       for bp in bodyparts], dtype='float64')           # (K, F, 3)
    M = np.array([[np.mean(frame[f'M_{i}{j}']) for j in range(3)] for i in range(3)])
    center = np.array([np.mean(frame[f'center_{i}']) for i in range(3)])
    world = points.dot(np.linalg.inv(M.T)) + center                    # undo the alignment
    with h5py.File(results) as f:
        fitted_points = f['fitted_keypoints_3d'][:]
        frames = f['samples/frame'][:]
    np.testing.assert_allclose(world[:, frames].transpose(1, 0, 2), fitted_points, rtol=1e-6)
    assert frame['fnum'].dtype.kind == 'i' and frame[bodyparts[0] + '_ncams'].dtype.kind == 'f'
    assert np.isfinite(frame[[bp + '_ncams' for bp in bodyparts]].to_numpy()[frames]).all()
