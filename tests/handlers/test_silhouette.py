"""SilhouetteHandler with a tiny fake renderer (the real one comes with rendering)."""
import pytest
import torch

from smilfit.cameras import project_points
from smilfit.handlers import SilhouetteHandler
from smilfit.registry import HANDLERS, RENDERERS

from .helpers import DT, observe, random_params, toy_model

H, W = 24, 32


def fake_renderer(vertices, faces, cameras):
    """Soft splats of the projected vertices: (B, C, H, W) in [0, 1], differentiable."""
    uv = project_points(vertices[:, None], cameras['K'], cameras['R'], cameras['t'],
                        cameras['dist'])                              # (B, C, V, 2)
    uv = uv / 20.0                                                    # into the small image
    ys = torch.arange(cameras['height'], dtype=vertices.dtype)
    xs = torch.arange(cameras['width'], dtype=vertices.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing='xy'), -1)     # (H, W, 2)
    d2 = ((grid[None, None, :, :, None] - uv[:, :, None, None]) ** 2).sum(-1)
    return 1.0 - torch.exp(-torch.exp(-d2 / 2.0).sum(-1))


@pytest.fixture(scope='module')
def model():
    return toy_model()


def setup_case(model, B=2):
    params = random_params(model, B)
    obs = observe(model, params)
    out = model(**params)
    cams = {k: obs[k] for k in ('K', 'R', 't', 'dist')}
    masks = fake_renderer(out.vertices, model.faces, dict(cams, height=H, width=W)) > 0.5
    obs['masks'] = masks
    return params, obs


def test_needs_a_renderer(model):
    h = HANDLERS.build(dict(type='SilhouetteHandler', name='sil'))
    assert h.needs_vertices
    with pytest.raises(ValueError, match='needs a renderer'):
        h.setup(model, {})
    h = SilhouetteHandler('sil', renderer=dict(type='NoSuchRenderer'))
    with pytest.raises(KeyError, match='NoSuchRenderer'):
        h.setup(model, {})
    with pytest.raises(TypeError):
        SilhouetteHandler('sil', renderer=3).setup(model, {})


def test_fake_renderer_loss_and_gradients(model):
    params, obs = setup_case(model)
    h = SilhouetteHandler('sil', renderer=fake_renderer,
                          loss=dict(type='SilhouetteLoss', mode='l2'))
    h.setup(model, {})
    good = h(model(**params), obs, params)
    moved = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    moved['transl'] = (params['transl'] + torch.tensor([0.0, 2.0, 0.0], dtype=DT)
                       ).requires_grad_(True)
    bad = h(model(**moved), obs, moved)
    assert good.shape == (2,) and torch.all(bad > good)
    bad.sum().backward()
    assert torch.isfinite(moved['transl'].grad).all() and moved['transl'].grad.abs().sum() > 0
    # per sample: changing sample 1's masks leaves sample 0 alone; invalid views drop out
    obs2 = dict(obs, masks=obs['masks'].clone())
    obs2['masks'][1] = ~obs2['masks'][1]
    again = h(model(**params), obs2, params)
    assert again[0] == good[0] and again[1] != good[1]
    none_valid = dict(obs, view_valid=torch.zeros(2, 2, dtype=torch.bool))
    assert torch.all(h(model(**params), none_valid, params) == 0)
    mask_valid = dict(obs2, mask_valid=torch.tensor([[True, True], [False, False]]))
    torch.testing.assert_close(h(model(**params), mask_valid, params),
                               torch.stack([good[0], good.new_zeros(())]))


def test_registered_renderer_and_errors(model):
    @RENDERERS.register_module(name='_TestFakeRenderer', force=True)
    class _Fake(torch.nn.Module):
        def forward(self, vertices, faces, cameras):
            return fake_renderer(vertices, faces, cameras)
    try:
        params, obs = setup_case(model)
        h = HANDLERS.build(dict(type='SilhouetteHandler', name='sil',
                                renderer=dict(type='_TestFakeRenderer')))
        h.setup(model, {})
        assert isinstance(h.renderer, _Fake)
        assert h(model(**params), obs, params).shape == (2,)
        with pytest.raises(ValueError, match='return_vertices'):
            h(model(**params, return_vertices=False), obs, params)
        with pytest.raises(KeyError, match='masks'):
            h(model(**params), {k: v for k, v in obs.items() if k != 'masks'}, params)
        small = dict(obs, masks=obs['masks'][..., :10])
        h2 = SilhouetteHandler('sil', renderer=lambda v, f, c: torch.zeros(2, 2, 5, 5))
        h2.setup(model, {})
        with pytest.raises(ValueError, match='renderer returned'):
            h2(model(**params), small, params)
    finally:
        RENDERERS.module_dict.pop('_TestFakeRenderer', None)
