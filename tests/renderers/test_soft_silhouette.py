"""SoftSilhouetteRenderer: the handler's camera dict, smilfit's camera modules, batching,
distortion, culling, errors, gradients and the silhouette handler end to end."""
import pytest
import torch

from smilfit.body_models import SMILModel, demo_model_data
from smilfit.cameras import (CameraGroup, FoVPerspectiveCameras, PinholeCameras,
                             WeakPerspectiveCameras, fov_to_pinhole, project_points,
                             undistort_pixels, weak_perspective_to_pinhole)
from smilfit.handlers import SilhouetteHandler
from smilfit.registry import RENDERERS
from smilfit.renderers import SoftSilhouetteRenderer
from smilfit.utils import register_all_modules

from .helpers import DT, icosphere_like, lift, pixel_camera, rot

register_all_modules()


def rig(C=2, B=None, H=32, W=40, dist=False, dtype=DT):
    """C cameras around a sphere at the origin, (1, C) or (B, C) leading dims."""
    K = torch.tensor([[45.0, 0.0, (W - 1) / 2], [0.0, 47.0, (H - 1) / 2], [0, 0, 1]],
                     dtype=dtype)
    Ks = torch.stack([K * torch.tensor([[1.0 + 0.1 * c], [1.0 + 0.1 * c], [1.0]], dtype=dtype)
                      for c in range(C)])
    Rs = torch.stack([rot('y', 35.0 * c, dtype) @ rot('x', 10.0 * c, dtype) for c in range(C)])
    ts = torch.tensor([[0.05 * c, -0.03, 2.0 + 0.2 * c] for c in range(C)], dtype=dtype)
    d = torch.tensor([[-0.15, 0.03, 1e-3, -2e-3, 0.0]] * C, dtype=dtype) if dist else None
    lead = (1, C) if B is None else (B, C)
    out = dict(K=Ks.expand(*lead, 3, 3), R=Rs.expand(*lead, 3, 3), t=ts.expand(*lead, 3),
               dist=None if d is None else d.expand(*lead, 5), height=H, width=W)
    if B is not None:  # make the cameras differ per sample
        shift = torch.linspace(-0.1, 0.1, B, dtype=dtype)[:, None, None]
        out['t'] = out['t'] + shift * torch.tensor([1.0, 0.5, 0.0], dtype=dtype)
    return out


def sphere_batch(B=3, dtype=DT):
    verts, faces = icosphere_like(dtype=dtype)
    g = torch.Generator().manual_seed(0)
    scale = 1.0 + 0.2 * torch.rand(B, 1, 3, generator=g, dtype=dtype)
    offset = 0.1 * torch.randn(B, 1, 3, generator=g, dtype=dtype)
    return verts * scale + offset, faces


def test_registered_and_configurable():
    r = RENDERERS.build(dict(type='SoftSilhouetteRenderer', sigma=2.0, gamma=0.5, cutoff=1e-3))
    assert isinstance(r, SoftSilhouetteRenderer) and r.sigma == 2.0 and r.gamma == 0.5
    verts, faces = sphere_batch(1)
    other = SoftSilhouetteRenderer(sigma=2.0, gamma=1e-4, cutoff=1e-3)
    # gamma only matters for RGB blending: silhouettes ignore it.
    assert torch.equal(r(verts, faces, rig()), other(verts, faces, rig()))
    for bad in (dict(sigma=0.0), dict(sigma=float('nan')), dict(cutoff=0.0),
                dict(max_pairs=0)):
        with pytest.raises(ValueError):
            SoftSilhouetteRenderer(**bad)


def test_batched_over_samples_and_views_equals_one_at_a_time():
    verts, faces = sphere_batch(3)
    r = SoftSilhouetteRenderer(sigma=1.5)
    for cams in (rig(C=2), rig(C=2, B=3, dist=True)):
        out = r(verts, faces, cams)
        assert out.shape == (3, 2, 32, 40)
        assert float(out.amax((-1, -2)).min()) > 0.99  # every view sees the sphere
        for b in range(3):
            for c in range(2):
                one = {k: (v[min(b, v.shape[0] - 1), c][None, None] if torch.is_tensor(v)
                           else v) for k, v in cams.items()}
                torch.testing.assert_close(out[b, c], r(verts[b:b + 1], faces, one)[0, 0],
                                           rtol=0, atol=1e-12)


def test_dict_without_batch_axis_is_one_rig():
    verts, faces = sphere_batch(2)
    cams = rig(C=2)
    flat = {k: (v[0] if torch.is_tensor(v) else v) for k, v in cams.items()}
    r = SoftSilhouetteRenderer()
    torch.testing.assert_close(r(verts, faces, flat), r(verts, faces, cams), rtol=0, atol=0)


def test_camera_modules_render_as_their_projection():
    verts, faces = sphere_batch(2)
    cams = rig(C=2, dist=True)
    r = SoftSilhouetteRenderer(sigma=1.5)
    ref = r(verts, faces, cams)
    pin = PinholeCameras(K=cams['K'][0], R=cams['R'][0], t=cams['t'][0], dist=cams['dist'][0],
                         image_size=(40, 32))
    torch.testing.assert_close(r(verts, faces, pin), ref, rtol=0, atol=1e-10)
    group = CameraGroup(['a', 'b'], K=cams['K'][0], dist=cams['dist'][0], R=cams['R'][0],
                        t=cams['t'][0], image_sizes=[[40, 32], [40, 32]])
    torch.testing.assert_close(r(verts, faces, group), ref, rtol=0, atol=1e-9)
    # FoV cameras (pytorch3d's convention) equal their pinhole conversion.
    fov = FoVPerspectiveCameras(fov=torch.tensor([50.0, 60.0], dtype=DT),
                                R=torch.stack([rot('y', 180.0), rot('y', 150.0)]),
                                T=torch.tensor([[0.0, 0.0, 2.2], [0.1, 0.0, 2.0]], dtype=DT),
                                image_size=(40, 32))
    m = fov_to_pinhole(fov.fov, fov.R, fov.T, fov.image_size).to_matrices()
    via_dict = r(verts, faces, dict(K=m.K, R=m.R, t=m.t, dist=None, height=32, width=40))
    assert float(via_dict.amax((-1, -2)).min()) > 0.99
    torch.testing.assert_close(r(verts, faces, fov), via_dict, rtol=0, atol=1e-9)
    # Weak perspective is rendered orthographically; a long-focal pinhole approaches it.
    weak = WeakPerspectiveCameras(s=torch.tensor([1.5, 1.2], dtype=DT),
                                  tx=torch.tensor([0.0, 0.1], dtype=DT), ty=0.0,
                                  image_size=(40, 32))
    ortho = r(verts, faces, weak)
    far = weak_perspective_to_pinhole(weak.s, weak.tx, weak.ty, (40, 32),
                                      focal_length=1e6).to_matrices()
    approx = r(verts, faces, dict(K=far.K, R=far.R, t=far.t, dist=None, height=32, width=40))
    assert float(ortho.amax((-1, -2)).min()) > 0.99
    torch.testing.assert_close(ortho, approx, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match='image size'):
        r(verts, faces, PinholeCameras(K=cams['K'][0]))
    # ... unless the renderer is given one.
    sized = SoftSilhouetteRenderer(sigma=1.5, image_size=(40, 32))
    torch.testing.assert_close(sized(verts, faces, PinholeCameras(
        K=cams['K'][0], R=cams['R'][0], t=cams['t'][0], dist=cams['dist'][0])), ref,
        rtol=0, atol=1e-10)


def test_distortion_is_applied_to_vertices_with_straight_edges():
    # Exact silhouette of the distorted image: a pixel is covered when its undistorted
    # position lies in an undistorted projected triangle. The renderer bends vertices,
    # not edges; for faces a few pixels across that changes only pixels grazing an edge.
    verts, faces = sphere_batch(1)
    cams = rig(C=1, H=64, W=80, dist=True)
    cams['K'] = cams['K'] * torch.tensor([[2.0, 1, 1], [1, 2.0, 1], [1, 1, 1]], dtype=DT)
    sil = SoftSilhouetteRenderer(sigma=1e-4)(verts, faces, cams)[0, 0] > 0.5
    rows, cols = torch.meshgrid(torch.arange(64, dtype=DT), torch.arange(80, dtype=DT),
                                indexing='ij')
    pix = torch.stack([cols, rows], -1).reshape(-1, 2)
    ideal = undistort_pixels(pix, cams['K'][0, 0], cams['dist'][0, 0])
    tri = project_points(verts[0], cams['K'][0, 0], cams['R'][0, 0], cams['t'][0, 0])[faces]
    a, e = tri, tri.roll(-1, 0 if tri.ndim == 2 else 1) - tri
    w = ideal[:, None, None] - a[None]
    cross = e[None, ..., 0] * w[..., 1] - e[None, ..., 1] * w[..., 0]
    exact = ((cross > 0).all(-1) | (cross < 0).all(-1)).any(-1).reshape(64, 80)
    differ = int((sil != exact).sum())
    assert int(exact.sum()) > 500 and differ <= 0.01 * int(exact.sum())
    # Without the approximation's straight edges (no distortion) they agree exactly.
    cams['dist'] = None
    sil = SoftSilhouetteRenderer(sigma=1e-4)(verts, faces, cams)[0, 0] > 0.5
    ideal = pix
    w = ideal[:, None, None] - a[None]
    cross = e[None, ..., 0] * w[..., 1] - e[None, ..., 1] * w[..., 0]
    exact = ((cross > 0).all(-1) | (cross < 0).all(-1)).any(-1).reshape(64, 80)
    assert torch.equal(sil, exact)


def test_faces_behind_the_near_plane_are_skipped():
    uv = torch.tensor([[4.5, 4.5], [14.7, 4.5], [4.5, 14.7]], dtype=DT)
    verts = lift(uv)[None]
    r = SoftSilhouetteRenderer(sigma=1e-3, near=0.5)
    cams = pixel_camera()
    assert float(r(verts, torch.tensor([[0, 1, 2]]), cams).sum()) > 40
    behind = verts.clone()
    behind[0, 2] = -behind[0, 2]  # one vertex behind the camera: the face is dropped
    assert float(r(behind, torch.tensor([[0, 1, 2]]), cams).abs().max()) == 0.0
    near = verts * torch.tensor([1.0, 1.0, 0.2], dtype=DT)  # depth 0.4 < near
    assert float(r(near, torch.tensor([[0, 1, 2]]), cams).abs().max()) == 0.0


def test_non_finite_vertices_poison_only_their_sample():
    verts, faces = sphere_batch(2)
    r = SoftSilhouetteRenderer()
    good = r(verts[:1], faces, rig())
    bad = verts.clone()
    bad[1, 5, 0] = float('nan')
    out = r(bad, faces, rig())
    assert torch.isnan(out[1]).all()
    torch.testing.assert_close(out[:1], good, rtol=0, atol=0)


def test_bad_inputs_are_named():
    verts, faces = sphere_batch(1)
    r = SoftSilhouetteRenderer()
    with pytest.raises(ValueError, match='faces'):
        r(verts, faces[:, :2], rig())
    with pytest.raises(TypeError, match='integer'):
        r(verts, faces.double(), rig())
    with pytest.raises(ValueError, match='vertices'):
        r(verts, faces + 1000, rig())
    with pytest.raises(ValueError, match=r'vertices must be \(B, V, 3\)'):
        r(verts[0], faces, rig())
    cams = rig()
    with pytest.raises(KeyError, match="'K'"):
        r(verts, faces, {k: v for k, v in cams.items() if k != 'K'})
    with pytest.raises(KeyError, match='height'):
        r(verts, faces, {k: v for k, v in cams.items() if k != 'height'})
    with pytest.raises(ValueError, match=r"cameras\['t'\]"):
        r(verts, faces, dict(cams, t=cams['t'][..., :2]))
    with pytest.raises(TypeError, match='camera'):
        r(verts, faces, 'camera')


def test_finite_differences_through_vertices_and_cameras():
    r = SoftSilhouetteRenderer(sigma=3.0, cutoff=1e-6, max_pairs=50)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    V = torch.tensor([[[-0.2, -0.1, 2.0], [0.25, -0.05, 2.1], [0.0, 0.3, 1.9],
                       [0.3, 0.3, 2.2]]], dtype=DT, requires_grad=True)
    K = torch.tensor([[[[40.0, 0, 7.3], [0, 42.0, 6.1], [0, 0, 1]]]], dtype=DT,
                     requires_grad=True)
    R = torch.eye(3, dtype=DT)[None, None]
    t = torch.tensor([[[0.01, 0.02, 0.1]]], dtype=DT, requires_grad=True)
    dist = torch.tensor([[[-0.1, 0.02, 1e-3, -2e-3, 0.0]]], dtype=DT, requires_grad=True)
    project = torch.randn(14 * 16, 2, generator=torch.Generator().manual_seed(1), dtype=DT)

    def render(V, K, t, dist):
        out = r(V, faces, dict(K=K, R=R, t=t, dist=dist, height=14, width=16))
        return out.reshape(-1) @ project
    assert torch.autograd.gradcheck(render, (V, K, t, dist), eps=1e-6, atol=1e-6)


def test_silhouette_handler_uses_the_renderer():
    model = SMILModel(data=demo_model_data(), dtype=torch.float32)
    handler = SilhouetteHandler('sil', renderer=dict(type='SoftSilhouetteRenderer', sigma=1.0),
                                loss=dict(type='SilhouetteLoss', mode='l2'))
    handler.setup(model, {})
    out = model()
    extent = float((out.vertices[0].amax(0) - out.vertices[0].amin(0)).norm())
    cams = rig(C=2, H=40, W=48, dtype=torch.float32)
    cams['t'] = cams['t'] * extent / 2.0
    obs = {k: cams[k] for k in ('K', 'R', 't')}
    obs['masks'] = handler.renderer(out.vertices, model.faces, cams)
    assert 40 < int((obs['masks'] > 0.5).sum()) < 0.8 * obs['masks'].numel()
    transl = torch.zeros(1, 3, requires_grad=True)
    assert float(handler(model(), obs, {})) == 0.0
    moved = model(transl=transl + torch.tensor([[0.05 * extent, 0.0, 0.0]]))
    loss = handler(moved, obs, {})
    assert float(loss.detach()) > 0.01
    loss.sum().backward()
    assert transl.grad.abs().sum() > 0 and torch.isfinite(transl.grad).all()


def test_chunk_size_defaults_per_device():
    assert SoftSilhouetteRenderer().pairs_per_chunk(torch.device('cpu')) == 1 << 16
    assert SoftSilhouetteRenderer().pairs_per_chunk(torch.device('cuda')) == 1 << 20
    assert SoftSilhouetteRenderer(max_pairs=97).pairs_per_chunk(torch.device('cuda')) == 97
    verts, faces = sphere_batch(2)   # the chunk size changes the work split, not the image
    torch.testing.assert_close(SoftSilhouetteRenderer(max_pairs=97)(verts, faces, rig()),
                               SoftSilhouetteRenderer()(verts, faces, rig()))


@pytest.mark.gpu
def test_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip('no CUDA device')
    verts, faces = sphere_batch(3, dtype=torch.float32)
    cams = {k: (v.float() if torch.is_tensor(v) else v) for k, v in rig(dist=True).items()}
    r = SoftSilhouetteRenderer(sigma=1.5)
    cpu_v = verts.clone().requires_grad_(True)
    cpu = r(cpu_v, faces, cams)
    cpu.square().sum().backward()
    gpu_v = verts.cuda().requires_grad_(True)
    gpu = r(gpu_v, faces.cuda(), {k: (v.cuda() if torch.is_tensor(v) else v)
                                  for k, v in cams.items()})
    gpu.square().sum().backward()
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-4)
    torch.testing.assert_close(gpu_v.grad.cpu(), cpu_v.grad, rtol=1e-3, atol=1e-3)
