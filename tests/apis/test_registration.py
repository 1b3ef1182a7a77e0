"""Scan registration API (smilfit.apis.registration) on the embedded demo mouse.

Expectations are analytic or come from known ground truth:
- surface_errors: hand-computed distances of points above a flat square;
- initial_global_pose: a rigidly moved rest mesh is found again (rotation within a few
  degrees, vertices within 2 % of the body length);
- register_batch: scans in other units and orientation (x10, rotated) are normalised
  (PCA + scale to the template's size), registered and mapped back to the scan frame
  within 1 % of the body length of the true meshes;
- register_scans: every output file, resume, overwrite and config errors.
"""
import csv
import json
import math

import numpy as np
import pytest
import torch

from smilfit.apis.registration import (GROUND_TRUTH_NAME, RegistrationConfigError,
                                       frame_candidates,
                                       initial_global_pose, list_scan_files, register_batch,
                                       register_scans, registration_options, surface_errors,
                                       write_synthetic_scans)
from smilfit.body_models import SMILModel, demo_model_data
from smilfit.body_models.rotations import axis_angle_to_matrix
from smilfit.registration import load_scan, sample_surface_points
from smilfit.registry import REGISTRANTS
from smilfit.utils import register_all_modules

register_all_modules()
BODY_LENGTH_MM = 168.0  # the demo mouse's rest-pose extent along x


@pytest.fixture(scope='module')
def model():
    return SMILModel(data=demo_model_data())


def rigid_only(**overrides):
    """A registrant config: rigid alignment with the scan chamfer only (fast)."""
    cfg = dict(type='SMILRegistrant', init='zeros', return_vertices=True,
               handlers=[dict(type='SurfaceHandler', name='scan',
                              loss=dict(type='ChamferLoss', direction='scan_to_model'))],
               stages=[dict(name='rigid', fit=['global_orient', 'transl'], n_iter=1,
                            optimizer=dict(type='LBFGS', max_iter=50))])
    cfg.update(overrides)
    return cfg


def rotation_angle_deg(R1, R2):
    cos = (((R1.transpose(-1, -2) @ R2).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2)
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))


# ----------------------------------------------------------------- errors
def test_surface_errors_hand_computed():
    # The unit square in z=0 (two triangles); points straight above it at known heights.
    verts = torch.tensor([[[0., 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    heights = [0.0, 0.1, 0.2, 0.3, 0.4]
    pts = torch.tensor([[[0.5, 0.25, h] for h in heights] + [[9., 9, 9], [0.5, 0.5, 0.5]]])
    pts[0, 5] = float('nan')                        # missing point: ignored
    mask = torch.tensor([[True] * 6 + [False]])     # padding: ignored
    e = surface_errors(verts, faces, pts, mask, percentile=95.0, candidates='all')
    assert e['scan_to_mesh_mean'].item() == pytest.approx(0.2, abs=1e-6)
    # torch.quantile interpolates linearly: position 0.95 * 4 = 3.8 -> 0.3 + 0.8 * 0.1.
    assert e['scan_to_mesh_p95'].item() == pytest.approx(0.38, abs=1e-6)
    assert e['scan_to_mesh_max'].item() == pytest.approx(0.4, abs=1e-6)
    assert e['num_points'].item() == 5
    # Every corner's nearest scan point is (0.5, 0.25, 0): distances sqrt(0.3125) and
    # sqrt(0.8125), twice each.
    near, far = math.sqrt(0.5 ** 2 + 0.25 ** 2), math.sqrt(0.5 ** 2 + 0.75 ** 2)
    assert e['mesh_to_scan_mean'].item() == pytest.approx((near + far) / 2, abs=1e-6)


def test_surface_errors_rejects_empty_scan():
    verts = torch.zeros(1, 3, 3)
    with pytest.raises(ValueError, match=r'scan\(s\) \[0\]'):
        surface_errors(verts, torch.tensor([[0, 1, 2]]), torch.full((1, 4, 3), float('nan')))


# --------------------------------------------------------- initialisation
def test_initial_global_pose_finds_a_rigid_motion(model):
    g = torch.Generator().manual_seed(3)
    B = 6
    aa = torch.randn(B, 3, generator=g) * 1.2
    transl = torch.randn(B, 3, generator=g) * 50.0
    with torch.no_grad():
        truth = model(global_orient=aa, transl=transl).vertices
        points = sample_surface_points(truth, model.faces, 3000, g)['points']
    init = initial_global_pose(model, points, num_rolls=8)
    angle = rotation_angle_deg(axis_angle_to_matrix(aa), axis_angle_to_matrix(
        init['global_orient']))
    # Rolls are tried every 45 degrees: the best is within 22.5 degrees (plus PCA noise).
    assert angle.max() < 25.0, angle
    with torch.no_grad():
        found = model(**init).vertices
    err = (found - truth).norm(dim=-1).mean(1)
    assert err.max() < 0.05 * BODY_LENGTH_MM, err
    # With the four sign flips only (2 rolls), the mouse's nearly equal width and
    # height leave some scans rolled far off: the extra rolls are needed.
    flips_only = initial_global_pose(model, points, num_rolls=2)
    coarse = rotation_angle_deg(axis_angle_to_matrix(aa), axis_angle_to_matrix(
        flips_only['global_orient']))
    assert coarse.max() > angle.max()


def test_frame_candidates_are_rotations_with_the_sign_flips():
    c = frame_candidates(8)
    assert c.shape == (16, 3, 3)
    eye = torch.eye(3, dtype=c.dtype)
    assert torch.allclose(c @ c.transpose(1, 2), eye.expand_as(c), atol=1e-12)
    assert torch.allclose(torch.linalg.det(c), torch.ones(16, dtype=c.dtype))
    for flip in ((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)):
        d = torch.diag(torch.tensor(flip, dtype=c.dtype))
        assert any(torch.allclose(m, d, atol=1e-12) for m in c), flip


# ---------------------------------------------------------------- a batch
def test_register_batch_normalises_and_maps_back(model):
    """Scans 10x larger and rotated: scale + PCA normalisation, fit, map back."""
    registrant = REGISTRANTS.build(dict(rigid_only(), body_model=model))
    registrant.setup(dict(keypoint_names=[]))
    g = torch.Generator().manual_seed(0)
    B = 3
    aa = torch.randn(B, 3, generator=g)
    with torch.no_grad():
        truth = model(global_orient=aa, transl=torch.randn(B, 3, generator=g) * 30).vertices
        points = sample_surface_points(truth, model.faces, 800, g)['points']
    scale = 10.0  # e.g. scans in 0.1 mm
    options = registration_options(dict(registration=dict(
        normalize=dict(center='mean', scale='rms', target_size='template', align=True))))
    out = register_batch(registrant, points * scale, torch.ones(B, 800, dtype=torch.bool),
                         None, options)
    assert torch.allclose(out['transform'].scale, torch.full((B,), 1 / scale), rtol=0.05)
    err = (out['scan_vertices'] / scale - truth).norm(dim=-1).mean(1)
    assert err.max() < 0.01 * BODY_LENGTH_MM, err
    # Errors are reported in the scan's units (10x the model's).
    assert out['errors']['scan_to_mesh_mean'].max() < 0.01 * BODY_LENGTH_MM * scale
    assert out['errors']['scan_to_mesh_mean'].min() > 0


def test_registration_options_validate():
    with pytest.raises(RegistrationConfigError, match="unknown key.*'initt'"):
        registration_options(dict(registration=dict(initt='pca')))
    with pytest.raises(RegistrationConfigError, match='init'):
        registration_options(dict(registration=dict(init='icp')))
    with pytest.raises(RegistrationConfigError, match='mesh_format'):
        registration_options(dict(registration=dict(mesh_format='.fbx')))


# ------------------------------------------------------------- the folder
def make_cfg(scan_dir, **data):
    cfg = dict(body_model=dict(type='DemoSMILModel'), registrant=rigid_only(),
               data=dict(scan_dir=str(scan_dir), num_points=300, batch_size=2, **data),
               registration=dict(init_points=256))
    return cfg


@pytest.fixture(scope='module')
def scan_dir(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp('scans') / 'scans'
    write_synthetic_scans(model, folder, num_scans=3, num_points=400, noise_std=0.1,
                          pose_std=0.0, betas_std=0.0, global_orient_std=0.8,
                          transl_std=10.0, dropout=0.1, seed=1)
    return folder


def test_synthetic_scans_on_disk(scan_dir, model):
    files = list_scan_files(dict(scan_dir=str(scan_dir)))
    assert [f.name for f in files] == ['scan_0000.ply', 'scan_0001.ply', 'scan_0002.ply']
    # 10 % dropout: the dropped (NaN) points are not written.
    assert load_scan(files[0]).num_points == 360
    with np.load(scan_dir / GROUND_TRUTH_NAME) as z:
        assert z['vertices'].shape == (3, model.num_vertices, 3)
        assert list(z['names']) == ['scan_0000', 'scan_0001', 'scan_0002']
    with pytest.raises(FileExistsError):
        write_synthetic_scans(model, scan_dir, num_scans=1)


def test_list_scan_files_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='no scans'):
        list_scan_files(dict(scan_dir=str(tmp_path)))
    with pytest.raises(RegistrationConfigError, match='scan_dir'):
        list_scan_files(dict())
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b').mkdir()
    for d in ('a', 'b'):
        (tmp_path / d / 'x.ply').write_text('')
    with pytest.raises(RegistrationConfigError, match="repeated: \\['x'\\]"):
        list_scan_files(dict(scans=[str(tmp_path / 'a' / 'x.ply'),
                                    str(tmp_path / 'b' / 'x.ply')]))


def test_register_scans_outputs_resume_overwrite(scan_dir, model, tmp_path):
    cfg = make_cfg(scan_dir)
    work = tmp_path / 'work'
    results = register_scans(cfg, work, progress=False)
    with np.load(results) as z:
        assert list(z['names']) == ['scan_0000', 'scan_0001', 'scan_0002']
        V = model.num_vertices
        assert z['vertices'].shape == z['scan_vertices'].shape == (3, V, 3)
        assert z['global_orient'].shape == (3, 3) and z['transl'].shape == (3, 3)
        assert 'body_pose' not in z.files          # not fitted: not written
        assert z['norm_rotation'].shape == (3, 3, 3)
        # The default normalisation only centres: model frame = scan frame - centre.
        np.testing.assert_allclose(z['scan_vertices'] - z['norm_center'][:, None],
                                   z['vertices'], atol=1e-3)
        p95 = z['error_scan_to_mesh_p95']
        assert np.all(z['error_scan_to_mesh_mean'] <= p95) and np.all(
            p95 <= z['error_scan_to_mesh_max'])
        assert np.all(z['error_num_points'] == 300)
        with np.load(scan_dir / GROUND_TRUTH_NAME) as gt:
            err = np.linalg.norm(z['scan_vertices'] - gt['vertices'], axis=-1).mean(1)
    # Rest-shape scans: the rigid fit alone gets within 1 % of the body length.
    assert err.max() < 0.01 * BODY_LENGTH_MM, err
    mesh = load_scan(work / 'meshes' / 'scan_0001.ply')
    assert mesh.faces is not None and mesh.num_points == model.num_vertices
    with open(work / 'errors.csv') as f:
        rows = list(csv.DictReader(f))
    assert [r['name'] for r in rows] == ['scan_0000', 'scan_0001', 'scan_0002']
    assert float(rows[2]['scan_to_mesh_p95']) == pytest.approx(float(p95[2]), rel=1e-4)
    summary = json.loads((work / 'summary.json').read_text())
    assert summary['num_scans'] == 3
    assert summary['ground_truth']['per_vertex_mean'] == pytest.approx(err.mean(), rel=1e-4)
    assert sorted(p.name for p in (work / 'chunks').glob('batch_*.npz')) == [
        'batch_00000.npz', 'batch_00001.npz']

    with pytest.raises(FileExistsError, match='--resume'):
        register_scans(cfg, work, progress=False)
    chunk = work / 'chunks' / 'batch_00000.npz'
    stamp = chunk.stat().st_mtime_ns
    register_scans(cfg, work, resume=True, progress=False)      # nothing to redo
    assert chunk.stat().st_mtime_ns == stamp
    changed = make_cfg(scan_dir, max_scans=2)
    with pytest.raises(FileExistsError, match='different config'):
        register_scans(changed, work, resume=True, progress=False)
    register_scans(changed, work, overwrite=True, progress=False)
    with np.load(results) as z:
        assert z['vertices'].shape[0] == 2


def test_register_scans_config_errors(scan_dir, tmp_path):
    cfg = make_cfg(scan_dir)
    cfg['data']['num_point'] = 10
    with pytest.raises(RegistrationConfigError, match="'num_point'"):
        register_scans(cfg, tmp_path / 'a', progress=False)
    cfg = make_cfg(scan_dir)
    del cfg['registrant']
    with pytest.raises(RegistrationConfigError, match='registrant'):
        register_scans(cfg, tmp_path / 'b', progress=False)
    cfg = make_cfg(scan_dir)
    del cfg['body_model']
    with pytest.raises(RegistrationConfigError, match='no body_model'):
        register_scans(cfg, tmp_path / 'c', progress=False)
