"""Surface losses on CUDA (brute-force nearest neighbours there) against the CPU (where
the k-d tree may serve them: the same distances either way)."""
import pytest
import torch

from smilfit.body_models import SMILModel, demo_model_data
from smilfit.losses import ChamferLoss, NormalConsistencyLoss, PointToSurfaceLoss
from smilfit.losses.surface import resolve_backend
from smilfit.registration import sample_surface_points

pytestmark = pytest.mark.gpu

DT = torch.float64


@pytest.fixture(scope='module')
def scene():
    model = SMILModel(data=demo_model_data(), dtype=DT)
    g = torch.Generator().manual_seed(0)
    pose = 0.2 * torch.randn(2, model.num_joints - 1, 3, generator=g, dtype=DT)
    verts = model(body_pose=pose).vertices
    target = model(body_pose=pose + 0.05 * torch.randn(pose.shape, generator=g,
                                                         dtype=DT)).vertices
    sample = sample_surface_points(target, model.faces, 500, generator=g)
    return model.faces, verts, sample['points'], sample['normals']


@pytest.mark.parametrize('loss', [ChamferLoss(), PointToSurfaceLoss(),
                                  NormalConsistencyLoss()], ids=lambda l: type(l).__name__)
def test_surface_loss_and_gradient_match_cpu(scene, loss):
    faces, verts, points, normals = scene
    v_cpu = verts.clone().requires_grad_(True)
    v_gpu = verts.cuda().requires_grad_(True)
    kw = dict(faces=faces, points_normals=normals)
    kw_gpu = {k: v.cuda() for k, v in kw.items()}
    out_cpu = loss(v_cpu, points, **kw)
    out_gpu = loss(v_gpu, points.cuda(), **kw_gpu)
    assert out_gpu.device.type == 'cuda'
    assert resolve_backend('auto', v_gpu) == 'torch'
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-8, atol=1e-12)
    out_cpu.sum().backward()
    out_gpu.sum().backward()
    torch.testing.assert_close(v_gpu.grad.cpu(), v_cpu.grad, rtol=1e-6, atol=1e-12)
