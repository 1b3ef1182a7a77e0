"""Scan files (trimesh), resampling, batching."""
import numpy as np
import pytest
import torch

from smilfit.registration import Scan, ScanError, batch_scans, load_scan, save_scan

VERTS = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


@pytest.mark.parametrize('ext', ['.obj', '.ply'])
def test_mesh_round_trip_keeps_vertex_order(tmp_path, ext):
    path = tmp_path / f'tet{ext}'
    save_scan(Scan(VERTS, faces=FACES), path)
    scan = load_scan(path)
    np.testing.assert_allclose(scan.points, VERTS)
    np.testing.assert_array_equal(scan.faces, FACES)
    np.testing.assert_allclose(np.linalg.norm(scan.normals, axis=1), 1.0)


def test_stl_and_point_cloud(tmp_path):
    save_scan(Scan(VERTS, faces=FACES), tmp_path / 'tet.stl')
    stl = load_scan(tmp_path / 'tet.stl')
    assert stl.faces.shape == (4, 3)  # STL stores 3 corners per face, unmerged
    assert set(map(tuple, stl.points.round(6))) == set(map(tuple, VERTS))
    save_scan(Scan(VERTS[:3]), tmp_path / 'cloud.ply')
    cloud = load_scan(tmp_path / 'cloud.ply')
    np.testing.assert_allclose(cloud.points, VERTS[:3])
    assert cloud.faces is None
    with pytest.raises(ScanError, match='point cloud'):
        save_scan(Scan(VERTS[:3]), tmp_path / 'cloud.obj')


def test_surface_resampling(tmp_path):
    path = tmp_path / 'tet.obj'
    save_scan(Scan(VERTS, faces=FACES), path)
    scan = load_scan(path, num_points=2000, seed=1)
    assert scan.points.shape == (2000, 3) and scan.faces is None
    # every sample lies on a face of the tetrahedron: x, y, z >= 0 and x + y + z <= 1,
    # with at least one coordinate 0 or the sum 1
    p = scan.points
    assert (p > -1e-12).all() and (p.sum(1) < 1 + 1e-12).all()
    on = (np.abs(p) < 1e-12).any(1) | (np.abs(p.sum(1) - 1) < 1e-12)
    assert on.all()
    # area weighting: the slanted face has area sqrt(3)/2 of total (3/2 + sqrt(3)/2)
    frac = (np.abs(p.sum(1) - 1) < 1e-12).mean()
    assert abs(frac - (np.sqrt(3) / 2) / (1.5 + np.sqrt(3) / 2)) < 0.04
    np.testing.assert_allclose(load_scan(path, num_points=2000, seed=1).points, p)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_scan(tmp_path / 'missing.obj')
    bad = tmp_path / 'bad.ply'
    bad.write_text('not a ply file')
    with pytest.raises(ScanError, match='bad.ply'):
        load_scan(bad)


def test_batch_scans_pads_and_masks():
    a = Scan(VERTS, normals=np.tile([0, 0, 1.0], (4, 1)))
    b = Scan(VERTS[:2], normals=np.tile([1.0, 0, 0], (2, 1)))
    pts, mask, normals = batch_scans([a, b], dtype=torch.float64)
    assert pts.shape == (2, 4, 3) and mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert normals[1, 1].tolist() == [1.0, 0.0, 0.0] and pts[1, 2:].abs().max() == 0
    assert batch_scans([a, Scan(VERTS)])[2] is None  # not every scan has normals
