"""Heads: IEF iterations, the decoder cannot run without image tokens, and the
prediction depends on the image for ResNet and ViT backbones."""
import pytest
import torch

from smilfit.models import IEFTransformerDecoderHead, MLPHead

from .helpers import tiny_singleview


def _head(**kw):
    return IEFTransformerDecoderHead(in_dim=16, body_dim=7, camera_dim=3, num_views=2, dim=16,
                                     depth=1, num_heads=2, num_iterations=3, **kw)


def test_decoder_iterates_and_supervises_every_iteration():
    head = _head(output_init_std=0.1)
    mem = torch.randn(2, 5, 16)
    body, cams = torch.zeros(2, 7), torch.zeros(2, 2, 3)
    out = head(mem, None, None, None, body, cams)
    assert len(out) == 3
    assert out[0]['body'].shape == (2, 7) and out[0]['cameras'].shape == (2, 2, 3)
    # Each iteration refines the previous one (non-zero residuals).
    assert not torch.allclose(out[0]['body'], out[1]['body'])
    assert not torch.allclose(out[1]['cameras'], out[2]['cameras'])
    # Every iteration is differentiable w.r.t. the image tokens.
    mem.requires_grad_(True)
    out = head(mem, None, None, None, body, cams)
    out[0]['body'].sum().backward()
    assert mem.grad.abs().sum() > 0


def test_decoder_refuses_to_run_without_image_tokens():
    head = _head()
    body, cams = torch.zeros(2, 7), torch.zeros(2, 2, 3)
    with pytest.raises(ValueError, match='no image tokens'):
        head(None, None, None, None, body, cams)
    with pytest.raises(ValueError, match='M >= 1'):
        head(torch.zeros(2, 0, 16), None, None, None, body, cams)
    with pytest.raises(ValueError, match='M >= 1'):
        head(torch.zeros(2, 5, 8), None, None, None, body, cams)   # wrong feature size


def test_a_sample_without_valid_tokens_does_not_poison_the_batch():
    """Every token of sample 1 masked: attention over nothing would be NaN and spread
    through the batch's gradients; its tokens are used instead (on the device, no sync),
    and sample 0 is unaffected."""
    head = _head(output_init_std=0.1)
    mem = torch.randn(2, 5, 16, requires_grad=True)
    mask = torch.tensor([[False, False, True, True, True], [True] * 5])
    body, cams = torch.zeros(2, 7), torch.zeros(2, 2, 3)
    out = head(mem, mask, None, None, body, cams)[-1]
    assert torch.isfinite(out['body']).all() and torch.isfinite(out['cameras']).all()
    out['body'].sum().backward()
    assert torch.isfinite(mem.grad).all() and mem.grad[1].abs().sum() > 0
    alone = head(mem[:1], mask[:1], None, None, body[:1], cams[:1])[-1]['body']
    torch.testing.assert_close(alone, out['body'][:1])


def test_masked_tokens_are_ignored():
    head = _head(output_init_std=0.1).eval()
    mem = torch.randn(1, 6, 16)
    mask = torch.tensor([[False, False, False, True, True, True]])
    body, cams = torch.zeros(1, 7), torch.zeros(1, 2, 3)
    a = head(mem, mask, None, None, body, cams)[-1]['body']
    mem2 = mem.clone()
    mem2[:, 3:] = 100.0                      # change only the masked (invalid-view) tokens
    b = head(mem2, mask, None, None, body, cams)[-1]['body']
    assert torch.allclose(a, b, atol=1e-6)


def test_mlp_head_shapes_and_iterations():
    head = MLPHead(in_dim=8, body_dim=5, camera_dim=4, num_views=3, hidden=(16,),
                   num_iterations=2, output_init_std=0.1)
    out = head(None, None, torch.randn(2, 3, 8), torch.randn(2, 8), torch.zeros(2, 5),
               torch.zeros(2, 3, 4))
    assert len(out) == 2 and out[-1]['body'].shape == (2, 5)
    assert out[-1]['cameras'].shape == (2, 3, 4)
    with pytest.raises(ValueError, match='fused'):
        head(None, None, None, None, torch.zeros(2, 5), torch.zeros(2, 3, 4))


@pytest.mark.parametrize('backbone', ['resnet18', 'vit_tiny_patch16_224'])
def test_prediction_changes_with_the_image(backbone):
    """The reference's decoder got no image features from ResNets: here the decoder's
    output must depend on the image, for CNN and ViT backbones alike."""
    model = tiny_singleview(backbone, head=dict(type='IEFTransformerDecoderHead', dim=32,
                                                depth=1, num_heads=4, num_iterations=2,
                                                output_init_std=0.05)).eval()
    x = torch.randn(2, 3, 64, 64)
    x[1] = torch.randn(3, 64, 64)
    with torch.no_grad():
        out = model(x, {}, mode='tensor')['iterations'][-1]['body']
    diff = (out[0] - out[1]).abs().max()
    assert diff > 1e-4, f'{backbone}: prediction does not depend on the image ({diff})'
    # And the image features receive gradients through the decoder.
    model.zero_grad()
    model(x, {}, mode='tensor')['iterations'][-1]['body'].pow(2).sum().backward()
    first = next(p for p in model.backbone.parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0
