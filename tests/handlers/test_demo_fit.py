"""End to end on the demo mouse: handlers built from config drive a small fit."""
import pytest
import torch

from smilfit.cameras import project_points
from smilfit.registry import BODY_MODELS, HANDLERS

from .helpers import two_cameras


@pytest.fixture(scope='module')
def demo():
    return BODY_MODELS.build(dict(type='DemoSMILModel'))


def test_demo_two_view_fit_reduces_loss(demo):
    torch.manual_seed(0)
    B, J = 2, demo.num_joints
    names = list(demo.keypoint_names)
    data_names = [f'd_{n}' for n in names][::-1]            # other names and order
    lookup = {n: f'd_{n}' for n in names}
    true = dict(body_pose=0.2 * torch.randn(B, J - 1, 3),
                transl=torch.tensor([[0.0, 0.0, 0.0], [5.0, -3.0, 2.0]]))
    K, R, t, dist = (x.float() for x in two_cameras())
    t = t * 20.0                                            # the mouse is in mm, ~80 long
    with torch.no_grad():
        kp = demo(**true, return_vertices=False).keypoints
        uv = project_points(kp[:, None], K, R, t, dist)[:, :, [names.index(n[2:])
                                                               for n in data_names]]
    obs = dict(keypoints_2d=uv, confidence=torch.ones(uv.shape[:-1]),
               visible=torch.ones(uv.shape[:-1], dtype=torch.bool),
               view_valid=torch.ones(B, 2, dtype=torch.bool), K=K, R=R, t=t, dist=dist)
    handlers = torch.nn.ModuleDict({
        cfg['name']: HANDLERS.build(cfg) for cfg in [
            dict(type='Keypoint2DHandler', name='kp2d',
                 loss=dict(type='KeypointMSELoss', robust='gmof', sigma=100.0)),
            dict(type='PosePriorHandler', name='pose', weight=1e-3),
            dict(type='ShapePriorHandler', name='shape', weight=1e-3)]})
    for h in handlers.values():
        h.setup(demo, dict(keypoint_names=data_names, joint_lookup=lookup))
    assert not any(h.needs_vertices for h in handlers.values())
    params = dict(body_pose=torch.zeros(B, J - 1, 3, requires_grad=True),
                  transl=torch.zeros(B, 3, requires_grad=True),
                  betas=torch.zeros(B, demo.num_betas, requires_grad=True))
    opt = torch.optim.Adam(params.values(), lr=0.05)

    def total():
        out = demo(**params, return_vertices=False)
        return sum(h(out, obs, params) for h in handlers.values())   # (B,)
    first = total().detach()
    for _ in range(40):
        opt.zero_grad()
        loss = total()
        loss.sum().backward()
        opt.step()
    last = total().detach()
    assert torch.all(last < 0.5 * first), (first, last)
