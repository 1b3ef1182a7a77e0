"""SurfaceHandler and OffsetRegularizerHandler."""
import pytest
import torch

from smilfit.body_models import BodyModelOutput, SMILModel, demo_model_data
from smilfit.losses import LaplacianRegularizer
from smilfit.registration import generate_synthetic_scans
from smilfit.registry import HANDLERS

DT = torch.float64


@pytest.fixture(scope='module')
def model():
    return SMILModel(data=demo_model_data(), dtype=DT)


@pytest.fixture(scope='module')
def scans(model):
    return generate_synthetic_scans(model, 2, 800, noise_std=0.0, dropout=0.1, seed=3)


def with_offsets(model, out, offsets):
    """What the integrator's body model will return: vertices including offsets."""
    return BodyModelOutput(joints=out.joints, joints_kin=out.joints_kin,
                           keypoints=out.keypoints, vertices=out.vertices + offsets,
                           v_shaped=out.v_shaped, rot_mats=out.rot_mats,
                           joint_transforms=out.joint_transforms)


def test_surface_handler_scores_truth_lower(model, scans):
    h = HANDLERS.build(dict(type='SurfaceHandler', name='scan', weight=2.0,
                            loss=dict(type='PointToSurfaceLoss')))
    assert h.needs_vertices
    h.setup(model)
    obs = dict(scan_points=scans.points, scan_mask=scans.mask)
    truth = model(**scans.params)
    shifted = model(**dict(scans.params, transl=scans.params['transl'] + 1.0))
    at_truth, off = h(truth, obs), h(shifted, obs)
    assert at_truth.shape == (2,) and at_truth.max() < 1e-20
    # every scan point of the shifted mesh is at most 3 units away (|(1,1,1)|^2 = 3)
    assert (off > 0.1).all() and (off <= 2.0 * 3.0 + 1e-9).all()


def test_surface_handler_sees_offsets_and_lists(model, scans):
    h = HANDLERS.build(dict(type='SurfaceHandler', name='scan'))  # ChamferLoss
    h.setup(model)
    out = model(**scans.params)
    clouds = [p[m] for p, m in zip(scans.points, scans.mask)]
    padded = h(out, dict(scan_points=scans.points, scan_mask=scans.mask))
    torch.testing.assert_close(h(out, dict(scan_points=clouds)), padded)
    moved = h(with_offsets(model, out, torch.full_like(out.vertices, 0.5)),
              dict(scan_points=clouds))
    assert (moved > padded).all()


def test_surface_handler_fits_translation(model, scans):
    """A few Adam steps on transl through the chamfer loss move towards the truth."""
    h = HANDLERS.build(dict(type='SurfaceHandler', name='scan',
                            loss=dict(type='ChamferLoss', direction='scan_to_model')))
    h.setup(model)
    obs = dict(scan_points=scans.points, scan_mask=scans.mask)
    params = {k: v.clone() for k, v in scans.params.items()}
    params['transl'] = params['transl'] + torch.tensor([0.6, -0.4, 0.3], dtype=DT)
    transl = params.pop('transl').requires_grad_()
    opt = torch.optim.Adam([transl], lr=0.05)
    err0 = (transl - scans.params['transl']).norm(dim=-1).detach()
    for _ in range(40):
        opt.zero_grad()
        h(model(**params, transl=transl), obs).sum().backward()
        opt.step()
    err = (transl - scans.params['transl']).norm(dim=-1).detach()
    assert (err < 0.25 * err0).all()


def test_surface_handler_errors(model, scans):
    h = HANDLERS.build(dict(type='SurfaceHandler', name='scan'))
    h.setup(model)
    with pytest.raises(KeyError, match='scan_points'):
        h(model(**scans.params), {})
    with pytest.raises(ValueError, match='return_vertices'):
        h(model(**scans.params, return_vertices=False), dict(scan_points=scans.points))
    bad = HANDLERS.build(dict(type='SurfaceHandler', name='s', vertex_mask=[10 ** 6]))
    with pytest.raises(ValueError, match='vertex_mask'):
        bad.setup(model)


def test_surface_handler_vertex_mask(model, scans):
    """Masking out all but one vertex: model_to_scan sees only it."""
    out = model(**scans.params)
    h = HANDLERS.build(dict(type='SurfaceHandler', name='s', vertex_mask=[5],
                            loss=dict(type='ChamferLoss', direction='model_to_scan')))
    h.setup(model)
    pts = torch.zeros(2, 1, 3, dtype=DT)
    expect = (out.vertices[:, 5] ** 2).sum(-1)
    torch.testing.assert_close(h(out, dict(scan_points=pts)), expect)


def test_offset_regularizer_handler(model, scans):
    h = HANDLERS.build(dict(type='OffsetRegularizerHandler', name='lap', weight=3.0))
    h.setup(model)
    out = model(**scans.params)
    assert h(out, {}, {}).abs().max() == 0  # no offsets fitted yet
    off = 0.01 * torch.randn(2, model.num_vertices, 3, dtype=DT)
    direct = LaplacianRegularizer(faces=model.faces)(off)
    torch.testing.assert_close(h(out, {}, dict(vertex_offsets=off)), 3.0 * direct)
    with pytest.raises(ValueError, match='vertex_offsets'):
        h(out, {}, dict(vertex_offsets=off[:, :10]))
    # modes needing the base mesh get the shaped rest mesh (or the template)
    e = HANDLERS.build(dict(type='OffsetRegularizerHandler', name='edge',
                            loss=dict(type='EdgeLengthRegularizer', mode='length_change')))
    e.setup(model)
    assert e(out, {}, dict(vertex_offsets=torch.zeros_like(off))).abs().max() < 1e-20
    out_shaped = model(**scans.params, return_v_shaped=True)
    assert (e(out_shaped, {}, dict(vertex_offsets=off)) > 0).all()
