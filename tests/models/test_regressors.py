"""Single- and multi-view regressors: frames, losses, the prediction contract, features."""
import copy
import math

import pytest
import torch

from smilfit.body_models.rotations import axis_angle_to_matrix
from smilfit.models import RegressionDataPreprocessor, triangulation_consistency

from .helpers import KP2D, ground_truth_in_view0, tiny_multiview, tiny_singleview


def _prep(model, batch):
    return model.data_preprocessor(copy.deepcopy(batch), False)


def test_calibrated_frame_reproduces_ground_truth(multiview_batch):
    """Ground-truth parameters expressed in view 0's camera frame decode to the world-frame
    ground truth: 3D keypoints, parameters and the 2D keypoints of both views."""
    model = tiny_multiview()
    data = _prep(model, multiview_batch)
    s = data['data_samples']
    gt = s['params']
    decoded, _ = ground_truth_in_view0(model, s)
    assert torch.allclose(decoded['output'].keypoints, s['keypoints_3d'], atol=2e-3 *
                          model.body_length)
    assert torch.allclose(decoded['params']['global_orient'],
                          axis_angle_to_matrix(gt['global_orient']), atol=1e-5)
    assert torch.allclose(decoded['params']['transl'], gt['transl'], atol=1e-3 *
                          model.body_length)
    kps = model.project_keypoints(decoded)
    vis = s['visible']
    err = (kps['keypoints_2d'] - s['keypoints_2d']).norm(dim=-1)[vis]
    assert err.max() < 0.05                       # pixels
    # ... and the 2D keypoint loss of that prediction is ~0, the param loss exactly small.
    losses = model.frame_losses(decoded, s)
    assert losses['kp2d'].max() < 1e-2
    assert losses['param'].max() < 1e-6


def test_geometry_and_losses_run_in_full_precision_under_autocast(multiview_batch):
    """With --amp the networks run in bf16, but the body model, the cameras and the
    losses work on points hundreds of units and pixels from their origins, where bf16
    steps by whole units and pixels: they must see float32 whatever the head returned."""
    model = tiny_multiview(loss_weights=dict(kp2d=1e-2, shape_prior=1e-3, triangulation=1.0))
    data = _prep(model, multiview_batch)
    s, hw = data['data_samples'], data['inputs'].shape[-2:]
    with torch.no_grad():
        last = model.predictions(data['inputs'], s)['iterations'][-1]
        half = {k: None if v is None else v.bfloat16() for k, v in last.items()}
        want = model.decode({k: None if v is None else v.float() for k, v in half.items()}, s,
                            hw)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            got = model.decode(half, s, hw)
            got_kps, got_losses = model.project_keypoints(got), model.frame_losses(got, s)
        want_kps, want_losses = model.project_keypoints(want), model.frame_losses(want, s)
    for name in ('keypoints', 'joints'):
        assert getattr(got['output'], name).dtype == torch.float32
        torch.testing.assert_close(getattr(got['output'], name), getattr(want['output'], name))
    torch.testing.assert_close(got_kps['keypoints_2d'], want_kps['keypoints_2d'])
    assert set(got_losses) == set(want_losses)
    for name, value in want_losses.items():
        torch.testing.assert_close(got_losses[name], value)


def test_a_training_step_under_bf16_autocast(multiview_batch):
    """The step ``--amp`` runs (the CPU's autocast standing in for a GPU's, which CI has
    not): finite losses and gradients, the losses near the float32 step's (only the
    networks in bf16)."""
    torch.manual_seed(0)
    weights = dict(kp2d=1e-2, shape_prior=1e-3)
    model = tiny_multiview(loss_weights=weights)
    data = _prep(model, multiview_batch)
    want = model(**data, mode='loss')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = model(**data, mode='loss')
    assert set(got) == set(want)
    for name, value in got.items():
        assert value.dtype == torch.float32 and torch.isfinite(value)
        torch.testing.assert_close(value, want[name], rtol=0.1, atol=1e-3)
    sum(got.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # compiled (compile_loss, as on a GPU): the float32 region traces inside autocast
    # as part of one graph
    compiled = tiny_multiview(loss_weights=weights,
                              compile_loss=dict(backend='eager', fullgraph=True))
    compiled.load_state_dict(model.state_dict())
    torch._dynamo.reset()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        traced = compiled(**data, mode='loss')
    for name, value in traced.items():
        torch.testing.assert_close(value, got[name])


def test_loss_and_prediction_contract(multiview_batch):
    model = tiny_multiview(loss_weights=dict(kp2d=1e-2, shape_prior=1e-3, triangulation=1.0))
    data = _prep(model, multiview_batch)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_kp2d', 'loss_shape_prior', 'loss_param',
                           'loss_triangulation'}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        preds = model(**data, mode='predict')
    assert len(preds) == 4
    p = preds[0]
    N, C = len(model.keypoint_names), 2
    assert p['pred_keypoints_2d'].shape == (C, N, 2) and p['gt_keypoints_2d'].shape == (C, N, 2)
    assert p['pred_keypoints_3d'].shape == (N, 3) and p['gt_keypoints_3d'].shape == (N, 3)
    assert p['visible'].shape == (C, N) and p['view_valid'].shape == (C,)
    assert p['pred_cameras']['K'].shape == (C, 3, 3) and p['pred_cameras']['t'].shape == (C, 3)
    assert p['pred_params']['global_orient'].shape == (3,)               # axis-angle
    assert p['pred_params']['body_pose'].shape == (model.body_model.num_joints - 1, 3)
    assert p['features']['backbone'].shape == (model.backbone.out_dim,)
    assert p['features']['fused'].shape == (32,)
    assert p['image_size'].shape == (C, 2)
    assert p['session'] == multiview_batch['data_samples']['session'][0]
    assert isinstance(p['frame'], int)
    # The cameras are the calibrated ones (init='calibrated', predict=False).
    assert torch.allclose(p['pred_cameras']['R'], data['data_samples']['R'][0])
    raw = model(**data, mode='tensor')
    assert len(raw['iterations']) == 2 and raw['iterations'][-1]['body'].shape[0] == 4


def test_loss_weights_scale_and_switch_terms(multiview_batch):
    model = tiny_multiview().eval()
    data = _prep(model, multiview_batch)
    with torch.no_grad():
        a = model(**data, mode='loss')
        model.set_loss_weight('kp2d', 2e-2)
        model.set_loss_weight('param', 0.0)
        b = model(**data, mode='loss')
    assert torch.allclose(b['loss_kp2d'], 2 * a['loss_kp2d'])
    assert 'loss_param' not in b
    with pytest.raises(KeyError, match='unknown loss'):
        model.set_loss_weight('kp2dd', 1.0)
    with pytest.raises(ValueError, match='finite'):
        model.set_loss_weight('kp2d', -1.0)
    with pytest.raises(KeyError, match='unknown loss'):
        tiny_multiview(loss_weights=dict(silhouette=1.0))
    with pytest.raises(ValueError, match='used twice'):
        tiny_multiview(losses=[KP2D, KP2D])


def test_single_view_regressor(singleview_batch):
    model = tiny_singleview()
    data = _prep(model, singleview_batch)
    assert data['inputs'].shape == (4, 3, 64, 64)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_kp2d', 'loss_param'} and torch.isfinite(sum(losses.values()))
    with torch.no_grad():
        p = model.eval()(**data, mode='predict')[0]
    N = len(model.keypoint_names)
    assert p['pred_keypoints_2d'].shape == (1, N, 2) and p['gt_keypoints_2d'].shape == (1, N, 2)
    # Default camera: R = I, looking at the body from the default distance.
    assert torch.allclose(p['pred_cameras']['R'][0], torch.eye(3), atol=1e-5)
    assert model.camera_codec.dim == 4
    with pytest.raises(ValueError, match='view slots'):
        model(torch.zeros(2, 2, 3, 64, 64), {}, mode='tensor')


def test_triangulation_consistency_hand_computed():
    """Two cameras observing known points: the loss is 0 for the true points and
    |offset|^2 / scale^2 for shifted ones."""
    K = torch.tensor([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]], dtype=torch.float64)
    R = torch.stack([torch.eye(3, dtype=torch.float64),
                     axis_angle_to_matrix(torch.tensor([0.0, math.pi / 2, 0.0],
                                                       dtype=torch.float64))])
    t = torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.0, 5.0]], dtype=torch.float64)
    X = torch.tensor([[[0.1, 0.2, 0.3], [-0.3, 0.1, 0.2], [0.0, -0.2, -0.1]]],
                     dtype=torch.float64)
    from smilfit.cameras import project_points
    uv = project_points(X[:, None], K, R, t)                       # (1, 2, 3, 2)
    w = torch.ones(1, 2, 3, dtype=torch.float64)
    args = (K.expand(1, 2, 3, 3), R[None], t[None], None)
    assert triangulation_consistency(uv, w, *args, X).abs().max() < 1e-12
    shifted = X + torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)
    loss = triangulation_consistency(uv, w, *args, shifted, scale=2.0)
    assert torch.allclose(loss, torch.tensor([0.0625], dtype=torch.float64))
    # A point seen in one view only does not count.
    uv[:, 1, 0] = float('nan')
    loss = triangulation_consistency(uv, w, *args, shifted, scale=2.0)
    assert torch.allclose(loss, torch.tensor([0.0625], dtype=torch.float64))


def test_embedding_features(multiview_batch):
    model = tiny_multiview(embedding=dict(neck=dict(type='FeatureFusionNeck', out_dim=16,
                                                    hidden=32),
                                          part_keypoint='head', part_size=0.4,
                                          part_resolution=32)).eval()
    data = _prep(model, multiview_batch)
    with torch.no_grad():
        feats = model(**data, mode='predict')[0]['features']
    assert feats['embedding'].shape == (16,)
    assert torch.allclose(feats['embedding'].norm(), torch.tensor(1.0), atol=1e-5)
    assert feats['part'].shape == (model.backbone.out_dim,)
    assert feats['params'].shape == (model.body_codec.dim,)
    with pytest.raises(KeyError, match='not a model keypoint'):
        tiny_multiview(embedding=dict(part_keypoint='trunk'))


def test_calibrated_cameras_are_required(multiview_batch):
    model = tiny_multiview()
    data = _prep(model, multiview_batch)
    samples = {k: v for k, v in data['data_samples'].items() if k not in ('K', 'R', 't')}
    with pytest.raises(KeyError, match='calibrated'):
        model(data['inputs'], samples, mode='loss')


def test_data_preprocessor_normalises_uint8_and_stacks_lists():
    pre = RegressionDataPreprocessor()
    img = torch.full((3, 8, 8), 255, dtype=torch.uint8)
    out = pre(dict(inputs=[img, img], data_samples=dict(x=torch.zeros(2))))
    assert out['inputs'].shape == (2, 3, 8, 8) and out['inputs'].dtype == torch.float32
    expected = (255 - torch.tensor([123.675, 116.28, 103.53])) / torch.tensor(
        [58.395, 57.12, 57.375])
    assert torch.allclose(out['inputs'][0, :, 0, 0], expected)
    with pytest.raises(KeyError, match='inputs'):
        pre(dict(images=img))


def test_twenty_steps_lower_the_training_loss(multiview_batch):
    torch.manual_seed(0)
    model = tiny_multiview()
    data = _prep(model, multiview_batch)
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(20):
        total = sum(model(**data, mode='loss').values())
        optim.zero_grad()
        total.backward()
        optim.step()
        history.append(float(total.detach()))
    assert history[-1] < 0.7 * history[0], history


@pytest.mark.parametrize('temporal', [False, True])
def test_stacked_iterations_equal_one_decode_per_iteration(multiview_batch, temporal):
    """The loss decodes the T supervised iterations as one T * B batch: the same losses
    and gradients as decoding and scoring every iteration on its own; a handler that
    couples samples (temporal) still sees one iteration's batch at a time."""
    losses_cfg = [copy.deepcopy(KP2D), dict(type='ShapePriorHandler', name='shape_prior'),
                  dict(type='PosePriorHandler', name='pose_prior')]
    weights = dict(kp2d=1e-2, shape_prior=1e-3, pose_prior=1e-3, triangulation=0.5)
    if temporal:
        losses_cfg.append(dict(type='TemporalHandler', name='smooth', target='joints'))
        weights['smooth'] = 1e-3
    torch.manual_seed(0)
    model = tiny_multiview(losses=losses_cfg, loss_weights=weights,
                           camera=dict(init='calibrated', predict=True))
    head = model.head
    head.num_iterations = 3
    for lin in [head.body_out, *head.camera_out]:
        torch.nn.init.normal_(lin.weight, std=0.05)
    data = _prep(model, multiview_batch)
    inputs, s = data['inputs'], data['data_samples']

    stacked = model(inputs, s, mode='loss')
    grads = torch.autograd.grad(sum(stacked.values()), list(head.parameters()))

    res = model.predictions(inputs, s)
    sums = {}
    for pred in res['iterations']:
        decoded = model.decode(pred, s, inputs.shape[-2:])
        for name, value in model.frame_losses(decoded, s).items():
            sums[name] = sums.get(name, 0.0) + value.mean()
    loop = {f'loss_{k}': v * model.loss_weights[k] / 3 for k, v in sums.items()}
    assert set(loop) == set(stacked) and len(stacked) == 5 + temporal
    for k in loop:
        torch.testing.assert_close(stacked[k], loop[k], rtol=1e-5, atol=1e-7)
    loop_grads = torch.autograd.grad(sum(loop.values()), list(head.parameters()))
    # float32 sums in another order: compare each gradient as a whole.
    for g, h in zip(grads, loop_grads):
        assert (g - h).norm() <= 1e-4 * h.norm() + 1e-9


def test_compile_loss_traces_whole_regions_and_matches_eager(singleview_batch):
    """compile_loss compiles the head and the scoring of its iterations: each traces as
    one graph (fullgraph: a graph break, e.g. a host sync in a loss, fails here) and
    gives the eager losses; prediction stays eager; state dict and copies unaffected."""
    torch.manual_seed(0)
    eager = tiny_singleview()
    compiled = tiny_singleview(compile_loss=dict(backend='eager', fullgraph=True))
    compiled.load_state_dict(eager.state_dict())
    assert list(compiled.state_dict()) == list(eager.state_dict())
    data = _prep(eager, singleview_batch)
    torch._dynamo.reset()
    want = eager(**data, mode='loss')
    got = compiled(**data, mode='loss')
    assert set(compiled._compiled) == {'head', 'score'}
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k])
    sum(got.values()).backward()
    assert all(p.grad is not None for p in compiled.head.parameters())
    clone = copy.deepcopy(compiled)
    assert clone._compiled == {} and clone.compile_loss == dict(backend='eager', fullgraph=True)
    compiled.eval()
    with torch.no_grad():
        compiled(**data, mode='predict')
    with pytest.raises(TypeError, match='compile_loss'):
        tiny_singleview(compile_loss='yes')
