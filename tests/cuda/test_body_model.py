"""SMILModel on CUDA: float32 and float64, every skinning path, gradients, real models."""
import pytest
import torch

from smilfit.body_models import SMILModel, demo_model_data, load_model_data
from tests.body_models.test_smil_model import random_inputs
from tests.body_models.toy_models import toy_model_data
from tests.conftest import SHARED

pytestmark = pytest.mark.gpu


def _models():
    yield 'toy', toy_model_data(with_pca=True)
    yield 'toy with pose blendshapes', toy_model_data(with_posedirs=True, seed=2)
    yield 'demo', demo_model_data()
    stick = SHARED / 'models' / 'SMILy_STICK.pkl'
    if stick.exists():
        yield 'stick', load_model_data(stick)


@pytest.mark.parametrize('dtype, tol', [(torch.float64, 1e-9), (torch.float32, 2e-4)])
@pytest.mark.parametrize('path', ['per-sample', 'factored', 'chunked', 'joints-only'])
def test_forward_and_backward_match_cpu(dtype, tol, path):
    for name, data in _models():
        cpu = SMILModel(data=data, dtype=dtype)
        gpu = SMILModel(data=data, dtype=dtype).cuda()
        for m in (cpu, gpu):
            m.factored_min_batch = 1 if path == 'factored' else 10 ** 9
            if path == 'chunked':
                m.skinning_cache_bytes = 1  # smallest chunks: many of them
        kw = random_inputs(cpu, B=20, dtype=dtype)
        kw_gpu = {k: v.cuda().requires_grad_(True) for k, v in kw.items()}
        kw = {k: v.requires_grad_(True) for k, v in kw.items()}
        verts = path != 'joints-only'
        out_c = cpu(**kw, return_vertices=verts)
        out_g = gpu(**kw_gpu, return_vertices=verts)
        assert out_g.joints.device.type == 'cuda', name
        scale = float(out_c.joints.abs().max())
        torch.testing.assert_close(out_g.joints.cpu(), out_c.joints, rtol=0, atol=tol * scale,
                                   msg=name)
        loss_c, loss_g = out_c.joints.square().sum(), out_g.joints.square().sum()
        if verts:
            torch.testing.assert_close(out_g.vertices.cpu(), out_c.vertices, rtol=0,
                                       atol=tol * scale, msg=name)
            loss_c = loss_c + out_c.vertices.square().sum()
            loss_g = loss_g + out_g.vertices.square().sum()
        loss_c.backward()
        loss_g.backward()
        for k in kw:
            g_c, g_g = kw[k].grad, kw_gpu[k].grad.cpu()
            gscale = float(g_c.abs().max()) + 1e-12
            torch.testing.assert_close(g_g, g_c, rtol=0, atol=10 * tol * gscale,
                                       msg=f'{name}: d/d{k}')


def test_model_moves_between_devices():
    model = SMILModel(data=demo_model_data(), dtype=torch.float32)
    kw = random_inputs(model, B=2, dtype=torch.float32)
    before = model(**kw).vertices
    model.cuda()
    assert model.device.type == 'cuda'
    on_gpu = model(**{k: v.cuda() for k, v in kw.items()}).vertices
    model.cpu()
    torch.testing.assert_close(model(**kw).vertices, before)
    torch.testing.assert_close(on_gpu.cpu(), before, rtol=0, atol=1e-4)
