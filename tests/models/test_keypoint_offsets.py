"""Learned keypoint offsets: where the data's labellers put each keypoint relative to the
model's, in the frame of the joint carrying it, shared by every sample."""
import copy

import torch

from smilfit.models.regressors.decoding import project_keypoints

from .helpers import KP2D, ground_truth_in_view0, tiny_multiview

KP3D = dict(type='Keypoint3DHandler', name='kp3d',
            loss=dict(type='KeypointMSELoss', normalize='mean'))


def _model(offsets=True):
    return tiny_multiview(keypoint_offsets=offsets, losses=[copy.deepcopy(KP2D),
                                                            copy.deepcopy(KP3D)],
                          loss_weights=dict(kp2d=0.0, kp3d=1.0, param=0.0))


def _moved(decoded, carrier, offset, samples):
    """World displacement of an offset in the carrier joint's frame (body frame = view 0's
    camera: world = R0^T camera)."""
    M = decoded['output'].joint_transforms[:, carrier, :3, :3]
    R0 = samples['R'][:, 0].to(M)
    return torch.einsum('bi,bij->bj', torch.einsum('bij,j->bi', M, offset.to(M)), R0)


def test_offsets_move_each_keypoint_in_its_joints_frame(multiview_batch):
    model = _model().eval()
    samples = multiview_batch['data_samples']
    assert model.keypoint_offsets.abs().max() == 0          # starts at none
    base, _ = ground_truth_in_view0(model, samples)
    offset = torch.tensor([0.1, -0.05, 0.02], dtype=model.keypoint_offsets.dtype)
    with torch.no_grad():
        model.keypoint_offsets[3] = offset
    moved, _ = ground_truth_in_view0(model, samples)
    diff = moved['output'].keypoints - base['output'].keypoints
    others = [k for k in range(diff.shape[1]) if k != 3]
    assert diff[:, others].abs().max() < 1e-9
    expected = _moved(base, int(model._offset_carriers[3]), offset, samples)
    assert torch.allclose(diff[:, 3], expected, atol=1e-5)   # float32 model
    # the predictions (data order) carry them
    kp = project_keypoints(moved, model.keypoint_match, len(model.keypoint_names))
    assert kp is not None


def test_offsets_are_learned_from_labels_displaced_from_their_joints(multiview_batch):
    """Labels of one keypoint sit a fixed offset (in its joint's frame) from the model's
    keypoint in every sample: the kp3d loss alone recovers that offset."""
    model = _model().train()
    samples = dict(multiview_batch['data_samples'])
    truth = torch.tensor([0.08, 0.03, -0.05], dtype=model.keypoint_offsets.dtype)
    decoded, params_c = ground_truth_in_view0(model, samples)
    k = 5
    target = decoded['output'].keypoints.detach().clone()
    target[:, k] += _moved(decoded, int(model._offset_carriers[k]), truth, samples).detach()
    match = model.keypoint_match
    data = torch.full_like(samples['keypoints_3d'], float('nan'))
    data[:, match.data_index] = target[:, match.model_index].to(data)
    samples['keypoints_3d'] = data
    body = model.body_codec.encode(params_c).detach()
    opt = torch.optim.Adam([model.keypoint_offsets], lr=0.01)
    for _ in range(300):
        out = model.decode(dict(body=body, cameras=None), samples, (64, 64))
        loss = model.frame_losses(out, samples)['kp3d'].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    learned = model.keypoint_offsets.detach()
    assert torch.allclose(learned[k], truth, atol=2e-3), learned[k]
    assert learned[[i for i in range(len(learned)) if i != k]].abs().max() < 2e-3


def test_checkpoints_without_offsets_load_with_none(multiview_batch):
    plain = _model(offsets=False)
    model = _model()
    with torch.no_grad():
        model.keypoint_offsets.fill_(1.0)
    model.load_state_dict(plain.state_dict(), strict=True)
    assert model.keypoint_offsets.abs().max() == 0


def test_predictions_carry_the_offsets_so_the_parameters_repose_the_keypoints(
        multiview_batch):
    """``pred_params['keypoint_offsets']``: the body model posed with the predicted
    parameters, plus those offsets turned by their joints, gives the predicted keypoints
    (without them the offset keypoints would be missed)."""
    from smilfit.body_models.keypoint_naming import rotate_offsets
    from smilfit.body_models.parameters import MODEL_INPUTS
    model = _model().eval()
    with torch.no_grad():
        model.keypoint_offsets[2] = torch.tensor([0.2, -0.1, 0.05])
        model.keypoint_offsets[6] = torch.tensor([-0.1, 0.15, 0.0])
    samples = multiview_batch['data_samples']
    with torch.no_grad():
        preds = model.predict(multiview_batch['inputs'].float(), samples)
    params = {k: torch.stack([p['pred_params'][k] for p in preds])
              for k in preds[0]['pred_params']}
    assert torch.equal(params['keypoint_offsets'][0], model.keypoint_offsets)
    body = model.body_model
    with torch.no_grad():
        out = body(**{k: v.to(body.dtype) for k, v in params.items() if k in MODEL_INPUTS},
                   return_vertices=False)
    match = model.keypoint_match
    for offsets, close in ((params['keypoint_offsets'], True),
                           (torch.zeros_like(params['keypoint_offsets']), False)):
        posed = out.keypoints + rotate_offsets(offsets, out.joint_transforms,
                                               model._offset_carriers)
        expected = torch.stack([p['pred_keypoints_3d'] for p in preds])
        got = posed[:, match.model_index]
        want = expected[:, match.data_index].to(got)
        assert torch.allclose(got, want, atol=1e-4) is close
