"""CameraGroup: anipose TOML and sleap-io IO, validation, projection, triangulation, reports."""
import copy
import datetime
import math
import tomllib

import cv2
import numpy as np
import pytest
import torch

from smilfit.cameras import CalibrationError, CameraGroup
from smilfit.registry import CAMERAS
from tests.conftest import shared_path

from .helpers import random_points, ring_cameras

CALIBRATIONS = [
    ('aniposelib_calib', 'calib', '7cam-allen-mouse', 'calibration.toml'),
    ('aniposelib_calib', 'calib', '12cam-allen-mouse', 'calibration.toml'),
    ('aniposelib_calib', 'calib', 'mouse-outdoor', 'calibration_right_4_10_2026_adjusted.toml'),
    ('aniposelib_calib', 'calib_motobs_7cam.toml'),
    ('sleap_anipose_minimal_session', 'minimal_session', 'calibration.toml'),
]
SESSION = ('sleap_anipose_minimal_session', 'minimal_session')

VALID_TABLE = '''[cam_0]
name = "a"
size = [640, 480]
matrix = [[500.0, 0.0, 319.5], [0.0, 500.0, 239.5], [0.0, 0.0, 1.0]]
distortions = [-0.1, 0.01, 0.0, 0.0, 0.0]
rotation = [0.1, 0.2, 0.3]
translation = [1.0, 2.0, 300.0]
'''


def scene_points(group, B, N, spread=0.05, seed=1):
    """Points around the least-squares intersection of the cameras' optical axes."""
    centers = group.centers()
    axes = group.R[:, 2]  # optical axes in world coordinates
    proj = torch.eye(3, dtype=centers.dtype) - axes[:, :, None] * axes[:, None, :]
    target = torch.linalg.solve(proj.sum(0), (proj @ centers[..., None]).sum(0))[:, 0]
    size = (centers - target).norm(dim=-1).median()
    g = torch.Generator().manual_seed(seed)
    return target + spread * size * torch.randn(B, N, 3, generator=g, dtype=centers.dtype)


def synthetic_group(C=4, **kwargs):
    K, R, t, dist, (W, H) = ring_cameras(C=C, **kwargs)
    return CameraGroup([f'cam{c}' for c in range(C)], K, dist, R=R, t=t,
                       image_sizes=[[W, H]] * C, metadata={'source': 'synthetic'})


# ------------------------------------------------------------------ TOML round trip
@pytest.mark.parametrize('parts', CALIBRATIONS, ids=lambda p: '/'.join(p[1:]))
def test_anipose_toml_round_trip_is_exact(parts, tmp_path):
    path = shared_path('data', *parts)
    with open(path, 'rb') as f:
        original = tomllib.load(f)
    group = CameraGroup.from_anipose_toml(path)
    cams = [k for k in original if k != 'metadata']
    assert group.names == [str(original[k]['name']) for k in cams]
    assert group.metadata == original.get('metadata', {})
    out = tmp_path / 'calibration.toml'
    group.to_anipose_toml(out)
    with open(out, 'rb') as f:
        written = tomllib.load(f)
    assert written == original  # every float identical (shortest repr round trip)
    again = CameraGroup.from_anipose_toml(out)
    for name in ('K', 'dist', 'rvec', 't', 'image_sizes'):
        assert torch.equal(getattr(again, name), getattr(group, name)), name
    # sleap-io reads what we wrote (its own calibration-dict reader).
    from sleap_io.io.slp import make_camera_group
    sio_group = make_camera_group(written)
    assert [c.name for c in sio_group.cameras] == group.names
    for c, cam in enumerate(sio_group.cameras):
        np.testing.assert_array_equal(cam.matrix, group.K[c].numpy())
        np.testing.assert_array_equal(cam.rvec, group.rvec[c].numpy())
        assert tuple(cam.size) == tuple(group.image_sizes[c].tolist())


@pytest.mark.parametrize('parts', CALIBRATIONS[:1] + CALIBRATIONS[-1:],
                         ids=['7cam', 'minimal_session'])
def test_real_calibration_projects_like_cv2(parts):
    group = CameraGroup.from_anipose_toml(shared_path('data', *parts))
    X = scene_points(group, 2, 25)
    assert (group.depth(X) > 0).all()
    uv = group.project(X)
    assert uv.shape == (2, len(group), 25, 2)
    for c in range(len(group)):
        ref, _ = cv2.projectPoints(X.reshape(-1, 3).numpy(), group.rvec[c].numpy(),
                                   group.t[c].numpy(), group.K[c].numpy(), group.dist[c].numpy())
        np.testing.assert_allclose(uv[:, c].numpy(), ref.reshape(2, 25, 2), atol=1e-6, rtol=0)
        R_cv = cv2.Rodrigues(group.rvec[c].numpy())[0]
        np.testing.assert_allclose(group.R[c].numpy(), R_cv, atol=1e-14, rtol=0)


def test_undistortion_matches_cv2_over_the_whole_image():
    """Also where the session's strong k1-only lenses fold over (image corners), where both
    OpenCV and smilfit return meaningless values: the iteration is the same."""
    group = CameraGroup.from_anipose_toml(shared_path('data', *SESSION, 'calibration.toml'))
    W, H = group.image_sizes[0].tolist()
    grid = torch.stack(torch.meshgrid(torch.linspace(0, W - 1, 33, dtype=torch.float64),
                                      torch.linspace(0, H - 1, 27, dtype=torch.float64),
                                      indexing='ij'), dim=-1).reshape(-1, 2)
    ours = group.undistort_points(grid.expand(len(group), -1, -1), normalized=True)
    for c in range(len(group)):
        crit = (cv2.TERM_CRITERIA_COUNT, 20, 0.0)
        src = grid.numpy().reshape(-1, 1, 2)
        K, dist = group.K[c].numpy(), group.dist[c].numpy()
        ref = cv2.undistortPointsIter(src, K, dist, None, None, crit) \
            if hasattr(cv2, 'undistortPointsIter') else \
            cv2.undistortPoints(src, K, dist, None, None, None, crit)
        np.testing.assert_allclose(ours[c].numpy(), ref.reshape(-1, 2), atol=1e-9, rtol=0)


def test_aniposelib_order_sorts_table_names():
    group = CameraGroup.from_anipose_toml(
        shared_path('data', *CALIBRATIONS[1]), order='aniposelib')
    file_order = CameraGroup.from_anipose_toml(shared_path('data', *CALIBRATIONS[1]))
    expected = [f'cam_{i}' for i in range(12)]
    expected = [file_order.names[int(k[4:])] for k in sorted(expected)]
    assert group.names == expected != file_order.names


# --------------------------------------------------------------------- sleap-io
def test_from_slp_matches_the_toml_and_round_trips_through_sleap_io():
    slp = shared_path('data', 'sleap_anipose_minimal_session', 'from_talmolab_sleap',
                      'minimal_proofread.slp')
    toml_group = CameraGroup.from_anipose_toml(shared_path('data', *SESSION, 'calibration.toml'))
    group = CameraGroup.from_slp(slp)
    assert group.names == toml_group.names == ['back', 'mid', 'side', 'top']
    for name in ('K', 'dist', 'rvec', 't', 'image_sizes'):
        torch.testing.assert_close(getattr(group, name), getattr(toml_group, name), atol=1e-12,
                                   rtol=0)
    sio_group = group.to_sleap_io()
    assert [c.name for c in sio_group.cameras] == group.names
    back = CameraGroup.from_sleap_io(sio_group)
    for name in ('K', 'dist', 'rvec', 't', 'image_sizes'):
        assert torch.equal(getattr(back, name), getattr(group, name)), name


def test_sleap_io_unknown_size_and_extra_metadata():
    import sleap_io as sio
    cams = [sio.Camera(matrix=np.eye(3), name='a', size=None, metadata={'serial': 'x1'}),
            sio.Camera(matrix=np.eye(3), name='b', size=(10, 20), tvec=[1.0, 0.0, 0.0])]
    group = CameraGroup.from_sleap_io(sio.CameraGroup(cameras=cams, metadata={'k': 1}))
    assert group.image_sizes.tolist() == [[0, 0], [10, 20]]
    assert group.camera_metadata[0] == {'serial': 'x1'} and group.metadata == {'k': 1}
    out = group.to_sleap_io()
    assert out.cameras[0].size is None and out.cameras[1].size == (10, 20)
    assert out.cameras[0].metadata == {'serial': 'x1'}
    dup = [sio.Camera(name='a'), sio.Camera(name='a')]
    with pytest.raises(CalibrationError, match="duplicate camera name 'a'"):
        CameraGroup.from_sleap_io(sio.CameraGroup(cameras=dup))


# -------------------------------------------------------------------- validation
@pytest.mark.parametrize('edit, message', [
    (lambda s: s.replace('matrix = [[500.0, 0.0, 319.5], [0.0, 500.0, 239.5], [0.0, 0.0, 1.0]]\n',
                         ''), r"\[cam_0\] is missing 'matrix'"),
    (lambda s: s.replace('[0.0, 0.0, 1.0]]', '[0.0, 0.0, 1.0], [1.0, 2.0, 3.0]]'),
     r'\[cam_0\]\.matrix must have shape \(3, 3\)'),
    (lambda s: s.replace('[0.0, 0.0, 1.0]]', '[0.0, 0.0, 2.0]]'), r'\[cam_0\]\.matrix must be'),
    (lambda s: s.replace('rotation = [0.1, 0.2, 0.3]', 'rotation = [0.1, nan, 0.3]'),
     r'\[cam_0\]\.rotation has non-finite'),
    (lambda s: s.replace('translation = [1.0, 2.0, 300.0]', 'translation = [1.0, 2.0]'),
     r'\[cam_0\]\.translation must have shape \(3,\)'),
    (lambda s: s.replace('distortions = [-0.1, 0.01, 0.0, 0.0, 0.0]', 'distortions = "none"'),
     r'\[cam_0\]\.distortions must'),
    (lambda s: s.replace('size = [640, 480]', 'size = [640.5, 480]'), r'\[cam_0\]\.size'),
    (lambda s: s + s.replace('cam_0', 'cam_1'), r"duplicate camera name 'a' in \[cam_0\] and "
                                                r"\[cam_1\]"),
    (lambda s: s + 'fisheye = true\n', 'fisheye'),
    (lambda s: s.replace('name = "a"', 'name = ["a"]'), r'\[cam_0\]\.name'),
    (lambda s: '[metadata]\nerror = 1.0\n', 'no camera tables'),
    (lambda s: s.replace('[cam_0]', '[cam_0'), 'not valid TOML'),
])
def test_malformed_calibrations_name_file_and_field(tmp_path, edit, message):
    path = tmp_path / 'bad_calibration.toml'
    path.write_text(edit(VALID_TABLE))
    with pytest.raises(CalibrationError, match=message) as info:
        CameraGroup.from_anipose_toml(path)
    assert 'bad_calibration.toml' in str(info.value)


@pytest.mark.parametrize('content, message', [
    (bytes(range(200, 256)) * 4, 'not a text file'),                # e.g. an .h5 by mistake
    (b'a = ' + b'[' * 100_000 + b']' * 100_000, 'nested too deeply'),
], ids=['binary', 'nested'])
def test_binary_or_deeply_nested_calibrations_name_the_file(tmp_path, content, message):
    path = tmp_path / 'bad_calibration.toml'
    path.write_bytes(content)
    with pytest.raises(CalibrationError, match=message) as info:
        CameraGroup.from_anipose_toml(path)
    assert 'bad_calibration.toml' in str(info.value)


def test_valid_table_extra_keys_and_four_distortions(tmp_path):
    path = tmp_path / 'calibration.toml'
    path.write_text(VALID_TABLE.replace('[-0.1, 0.01, 0.0, 0.0, 0.0]', '[-0.1, 0.01, 0.0, 0.0]')
                    + 'fisheye = false\nserial = "A-7"\n')
    group = CameraGroup.from_anipose_toml(path)
    assert group.dist.tolist() == [[-0.1, 0.01, 0.0, 0.0, 0.0]]
    assert group.camera_metadata == [{'fisheye': False, 'serial': 'A-7'}]
    group.to_anipose_toml(tmp_path / 'out.toml')
    written = tomllib.loads((tmp_path / 'out.toml').read_text())
    assert written['cam_0']['serial'] == 'A-7' and written['metadata'] == {}


def test_toml_writes_numpy_metadata_and_edge_values_exactly(tmp_path):
    """What smilfit hands tomli-w: numpy metadata becomes plain values, float64 edge
    values and odd strings survive exactly, and the file is written whole."""
    extra = {'title': 'quote " backslash \\ tab \t newline \n ü', 'odd key': 1,
             'floats': [0.1, -0.0, 1e-300, 1.7976931348623157e308, 5e-324, 1e16,
                        float('inf'), float('-inf')],
             'np': np.array([[1.5, 2.5], [3.0, 4.0]]), 'np_scalar': np.float64(0.3),
             'np_int': np.int64(7), 'flag': np.bool_(True), 'when': datetime.date(2024, 5, 1),
             'table': {'x': 1, 'sub': {'y': [1.0, 2.0]}}, 'inline': [{'a': 1, 'b': 'x'}]}
    group = synthetic_group(2)
    group.metadata = dict(extra)
    out = tmp_path / 'calibration.toml'
    group.to_anipose_toml(out)
    written = tomllib.loads(out.read_text())
    assert written['metadata'] == dict(extra, np=[[1.5, 2.5], [3.0, 4.0]], np_scalar=0.3,
                                       np_int=7, flag=True)
    assert [p.name for p in tmp_path.iterdir()] == ['calibration.toml']  # no temporaries
    group.metadata = {'nan': float('nan')}
    group.to_anipose_toml(out)
    assert math.isnan(tomllib.loads(out.read_text())['metadata']['nan'])


def test_toml_refuses_what_it_cannot_write_naming_the_key(tmp_path):
    group = synthetic_group(2)
    group.metadata = {'table': {'none': None}}
    with pytest.raises(TypeError, match=r'metadata\.table\.none'):
        group.to_anipose_toml(tmp_path / 'a.toml')
    group.metadata = {1: 2}
    with pytest.raises(TypeError, match='keys must be strings'):
        group.to_anipose_toml(tmp_path / 'b.toml')
    assert not list(tmp_path.iterdir())  # nothing written


# ---------------------------------------------------------------- group basics
def test_subset_index_registry_and_to(tmp_path):
    group = synthetic_group()
    assert group.index('cam2') == 2
    with pytest.raises(KeyError, match='cam9'):
        group.index('cam9')
    sub = group.subset(['cam3', 'cam1'])
    assert sub.names == ['cam3', 'cam1'] and sub.metadata == group.metadata
    assert torch.equal(sub.K, group.K[[3, 1]]) and torch.equal(sub.rvec, group.rvec[[3, 1]])
    X = random_points(2, 5)
    torch.testing.assert_close(sub.project(X), group.project(X)[:, [3, 1]])
    g32 = copy.deepcopy(group).to(torch.float32)  # Module.to works in place
    assert g32.K.dtype == torch.float32 and g32.image_sizes.dtype == torch.long
    assert g32.project(X.float()).dtype == torch.float32
    # Building from a config: the group itself and a calibration file.
    built = CAMERAS.build(dict(type='CameraGroup', names=['a', 'b'], K=group.K[:2].tolist(),
                               dist=group.dist[:2].tolist(), R=group.R[:2].tolist(),
                               t=group.t[:2].tolist()))
    torch.testing.assert_close(built.project(X), group.project(X)[:, :2])
    group.to_anipose_toml(tmp_path / 'calibration.toml')
    loaded = CAMERAS.build(dict(type='AniposeCalibration', path=str(tmp_path / 'calibration.toml'),
                                names=['cam1', 'cam0']))
    assert loaded.names == ['cam1', 'cam0']
    with pytest.raises(CalibrationError, match='duplicate'):
        CameraGroup(['a', 'a'], group.K[:2], R=group.R[:2])


def test_triangulate_with_distortion_nan_and_confidence():
    group = synthetic_group()
    X = random_points(3, 40)
    uv = group.project(X)
    torch.testing.assert_close(group.triangulate(uv), X, atol=1e-6, rtol=0)
    torch.testing.assert_close(group.triangulate(uv[0]), X[0], atol=1e-6, rtol=0)
    und = group.undistort_points(uv)
    ideal = CameraGroup(group.names, group.K, None, rvec=group.rvec, t=group.t).project(X)
    torch.testing.assert_close(und, ideal, atol=1e-6, rtol=0)
    uv = uv.clone()
    uv[0, :3, 0] = float('nan')
    conf = torch.ones(3, 4, 40, dtype=X.dtype)
    conf[1, :3, 1] = 0.0
    out = group.triangulate(uv, conf)
    assert torch.isnan(out[0, 0]).all() and torch.isnan(out[1, 1]).all()
    assert torch.isnan(out).any(-1).sum() == 2
    err = group.reprojection_error(out, uv)
    assert err.shape == (3, 4, 40)
    assert torch.isnan(err[0, :, 0]).all()
    assert torch.nanmean(err) < 1e-6


def test_reprojection_report_flags_a_bad_camera():
    group = synthetic_group()
    X = random_points(4, 50)
    g = torch.Generator().manual_seed(0)
    uv = group.project(X) + 0.5 * torch.randn(4, 4, 50, 2, generator=g, dtype=X.dtype)
    uv[:, 2] += 40.0  # camera 2 is off by 40 px
    uv[0, 1, :10] = float('nan')
    report = group.reprojection_report(X, uv)
    assert list(report) == group.names
    assert report['cam1']['count'] == 190 and report['cam0']['count'] == 200
    assert 50 < report['cam2']['median'] < 60
    assert report['cam0']['median'] < 1.5 and report['cam0']['p90'] >= report['cam0']['median']
    text = CameraGroup.format_report(report)
    assert 'cam2' in text and 'median' in text


# ------------------------------------------------------- real multi-camera session
@pytest.fixture(scope='module')
def mouse_session():
    """The 4-camera mouse session: calibration, 2D points (B, C, N, 2), reference 3D."""
    import h5py
    import sleap_io as sio
    root = shared_path('data', *SESSION)
    group = CameraGroup.from_anipose_toml(root / 'calibration.toml')
    points2d = np.full((120, len(group), 15, 2), np.nan)
    for c, name in enumerate(group.names):
        labels = sio.load_slp(str(root / name / f'minimal_{name}_proofread.slp'))
        assert len(labels.skeleton.nodes) == 15
        for frame in labels.labeled_frames:
            points2d[frame.frame_idx, c] = frame.instances[0].numpy()
    with h5py.File(root / 'points3d.h5', 'r') as f:
        reference = f['tracks'][:, 0]  # (120, 15, 3)
    return group, torch.from_numpy(points2d), torch.from_numpy(reference)


def test_session_reprojection_shows_side_as_the_bad_camera(mouse_session):
    group, points2d, reference = mouse_session
    report = group.reprojection_report(reference, points2d)
    medians = {name: s['median'] for name, s in report.items()}
    # Measured: back 9.6, mid 5.6, side 91.9, top 5.3 px (counts 1408, 1800, 1568, 1800).
    assert 80 < medians['side'] < 105
    good = [medians[n] for n in ('back', 'mid', 'top')]
    assert max(good) < 12
    assert medians['side'] > 5 * max(good)
    assert report['mid']['count'] == 1800 and report['back']['count'] == 1408


def test_session_triangulation_reproduces_points3d_on_good_cameras(mouse_session):
    """points3d.h5 came from aniposelib's triangulate_optim (robust, temporally smoothed), so a
    plain DLT does not match it exactly. Measured medians of the distance (mm; the mouse is
    about 150 mm nose to tail tip): back+mid+top 3.55 (p90 16.8), all four 14.8, mid+top 5.1.
    """
    group, points2d, reference = mouse_session
    good = ['back', 'mid', 'top']
    idx = [group.index(n) for n in good]
    out = group.subset(good).triangulate(points2d[:, idx])
    assert out.shape == (120, 15, 3) and torch.isfinite(out).all()
    dist = (out - reference).norm(dim=-1)
    assert dist.median() < 4.5
    assert dist.quantile(0.9) < 20.0
    everything = (group.triangulate(points2d) - reference).norm(dim=-1)
    assert everything.median() > 3 * dist.median()  # the bad side camera pulls it away
    # And the DLT's own reprojection error on the good cameras is small.
    report = group.reprojection_report(out, points2d)
    assert report['mid']['median'] < 4 and report['top']['median'] < 4
