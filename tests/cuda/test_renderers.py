"""Renderers on CUDA: the soft silhouette renderer (its custom backward included), the
silhouette handler, and the z-buffer rasteriser and shader, against the CPU."""
import numpy as np
import pytest
import torch

from smilfit.body_models import SMILModel, demo_model_data
from smilfit.handlers import SilhouetteHandler
from smilfit.renderers import SoftSilhouetteRenderer
from smilfit.renderers.zbuffer import rasterize
from smilfit.visualization.zbuffer import render_mesh
from tests.renderers.test_soft_silhouette import rig, sphere_batch
from tests.renderers.test_zbuffer import K, R_CAM, T_CAM, world_from_pixels

pytestmark = pytest.mark.gpu


def _cuda(cams):
    return {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in cams.items()}


@pytest.mark.parametrize('dtype, atol', [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize('max_pairs', [1 << 16, 97])  # one chunk; many chunks
@pytest.mark.parametrize('dist', [False, True])
def test_soft_silhouette_forward_and_custom_backward_match_cpu(dtype, atol, max_pairs, dist):
    verts, faces = sphere_batch(3, dtype=dtype)
    cams = {k: (v.to(dtype) if torch.is_tensor(v) else v)
            for k, v in rig(C=2, B=3, dist=dist, dtype=dtype).items()}
    r = SoftSilhouetteRenderer(sigma=1.5, max_pairs=max_pairs)
    weights = torch.rand(3, 2, 32, 40, generator=torch.Generator().manual_seed(0),
                         dtype=dtype)
    cpu_v = verts.clone().requires_grad_(True)
    cpu = r(cpu_v, faces, cams)
    (cpu * weights).sum().backward()
    gpu_v = verts.cuda().requires_grad_(True)
    gpu = r(gpu_v, faces.cuda(), _cuda(cams))
    assert gpu.device.type == 'cuda' and gpu.dtype == dtype
    (gpu * weights.cuda()).sum().backward()
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=atol)
    scale = float(cpu_v.grad.abs().max())
    torch.testing.assert_close(gpu_v.grad.cpu(), cpu_v.grad, rtol=0, atol=100 * atol * scale)


def test_soft_silhouette_gradcheck_on_cuda():
    """The custom backward against finite differences, on the GPU itself (float64)."""
    verts, faces = sphere_batch(1, dtype=torch.float64)
    cams = _cuda(rig(C=1, H=12, W=14))
    r = SoftSilhouetteRenderer(sigma=2.0, max_pairs=61)
    project = torch.randn(12 * 14, 2, generator=torch.Generator().manual_seed(1),
                          dtype=torch.float64).cuda()

    def render(v):
        return r(v, faces.cuda(), cams).reshape(-1) @ project
    v = verts.cuda().requires_grad_(True)
    # Atomic adds on the GPU sum in any order: repeated backward passes differ by rounding.
    assert torch.autograd.gradcheck(render, (v,), eps=1e-6, atol=1e-6, nondet_tol=1e-10)


def test_silhouette_handler_on_cuda():
    model = SMILModel(data=demo_model_data(), dtype=torch.float32).cuda()
    handler = SilhouetteHandler('sil', renderer=dict(type='SoftSilhouetteRenderer', sigma=1.0),
                                loss=dict(type='SilhouetteLoss', mode='l2'))
    handler.setup(model, {})
    out = model()
    extent = float((out.vertices[0].amax(0) - out.vertices[0].amin(0)).norm())
    cams = _cuda({k: (v.float() if torch.is_tensor(v) else v)
                  for k, v in rig(C=2, H=40, W=48).items()})
    cams['t'] = cams['t'] * extent / 2.0
    obs = {k: cams[k] for k in ('K', 'R', 't')}
    obs['masks'] = handler.renderer(out.vertices, model.faces, cams)
    transl = torch.zeros(1, 3, device='cuda', requires_grad=True)
    shift = torch.tensor([[0.05 * extent, 0.0, 0.0]], device='cuda')
    loss = handler(model(transl=transl + shift), obs, {})
    assert loss.device.type == 'cuda' and float(loss.detach().sum()) > 0.01
    loss.sum().backward()
    assert transl.grad.abs().sum() > 0 and torch.isfinite(transl.grad).all()


def _random_mesh():
    rng = np.random.default_rng(3)
    uv = rng.uniform([-10, -10], [74, 58], size=(60, 2))
    verts = world_from_pixels(uv, rng.uniform(2.0, 9.0, size=60))
    faces = rng.integers(0, 60, size=(80, 3))
    keep = ((faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2])
            & (faces[:, 0] != faces[:, 2]))
    return verts, faces[keep]


@pytest.mark.parametrize('chunk_size', [1 << 15, 97])
def test_zbuffer_rasterize_matches_cpu(chunk_size):
    verts, faces = _random_mesh()
    dist = np.array([-0.1, 0.02, 1e-3, -2e-3, 0.0])
    cpu = rasterize(verts, faces, K, R_CAM, T_CAM, dist, height=48, width=64,
                    chunk_size=chunk_size)
    gpu = rasterize(torch.as_tensor(verts).cuda(), torch.as_tensor(faces).cuda(), K, R_CAM,
                    T_CAM, dist, height=48, width=64, chunk_size=chunk_size)
    assert gpu.face_index.device.type == 'cuda'
    # Only pixels on a shared edge of two triangles may pick the other face, where the
    # two devices round the edge functions differently.
    same = gpu.face_index.cpu() == cpu.face_index
    assert float(same.float().mean()) > 0.995
    np.testing.assert_allclose(gpu.depth.cpu().numpy()[same.numpy()],
                               cpu.depth.numpy()[same.numpy()], rtol=1e-9)


def test_render_mesh_on_cuda_matches_cpu():
    verts, faces = _random_mesh()
    cpu = render_mesh(verts, faces, K, R_CAM, T_CAM, height=48, width=64)
    gpu = render_mesh(torch.as_tensor(verts).cuda(), torch.as_tensor(faces).cuda(), K, R_CAM,
                      T_CAM, height=48, width=64)
    assert isinstance(gpu.image, np.ndarray) and gpu.image.shape == (48, 64, 3)
    differ = np.abs(gpu.image.astype(int) - cpu.image.astype(int)).max(-1) > 1
    assert differ.mean() < 0.005
