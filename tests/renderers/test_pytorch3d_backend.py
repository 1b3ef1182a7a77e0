"""The optional pytorch3d backend: NDC conventions (always), agreement (where installed)."""
import pytest
import torch

from smilfit.cameras import FoVPerspectiveCameras
from smilfit.renderers import (PyTorch3DSilhouetteRenderer, SoftSilhouetteRenderer,
                               pixels_to_pytorch3d_ndc, pytorch3d_available)

from .helpers import DT, icosphere_like, rot


@pytest.mark.parametrize('size', [(40, 32), (32, 48)])
def test_pixels_to_ndc_follows_pytorch3d_fov_cameras(size):
    # FoVPerspectiveCameras implement pytorch3d's NDC (+x left, +y up, shorter side +-1).
    W, H = size
    cams = FoVPerspectiveCameras(fov=55.0, R=rot('y', 170.0), T=[0.1, -0.2, 3.0],
                                 image_size=size, dtype=DT)
    pts = torch.randn(20, 3, generator=torch.Generator().manual_seed(0), dtype=DT)
    torch.testing.assert_close(pixels_to_pytorch3d_ndc(cams.project(pts), H, W),
                               cams.project_ndc(pts), rtol=0, atol=1e-12)


@pytest.mark.skipif(pytorch3d_available(), reason='pytorch3d is installed')
def test_backend_says_it_needs_pytorch3d():
    with pytest.raises(ImportError, match='pytorch3d'):
        PyTorch3DSilhouetteRenderer()


@pytest.mark.skipif(not pytorch3d_available(), reason='pytorch3d is not installed')
def test_backends_agree():
    verts, faces = icosphere_like(dtype=torch.float32)
    verts = torch.stack([verts, verts * 1.2 + 0.05])
    K = torch.tensor([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    cams = dict(K=K.expand(1, 2, 3, 3),
                R=torch.stack([rot('y', 0.0), rot('y', 40.0)]).float()[None],
                t=torch.tensor([[[0.0, 0.0, 2.0], [0.1, 0.0, 2.2]]]),
                dist=torch.tensor([[[-0.1, 0.01, 0.0, 0.0, 0.0]] * 2]), height=48, width=64)
    ours_v = verts.clone().requires_grad_(True)
    theirs_v = verts.clone().requires_grad_(True)
    ours = SoftSilhouetteRenderer(sigma=1.5)(ours_v, faces, cams)
    theirs = PyTorch3DSilhouetteRenderer(sigma=1.5, faces_per_pixel=faces.shape[0],
                                         bin_size=0)(theirs_v, faces, cams)
    assert float(ours.amax((-1, -2)).min()) > 0.99
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-3)
    weights = torch.rand(ours.shape, generator=torch.Generator().manual_seed(0))
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    torch.testing.assert_close(theirs_v.grad, ours_v.grad, rtol=1e-2, atol=1e-2)
