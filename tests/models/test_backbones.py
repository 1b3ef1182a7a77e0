"""TimmBackbone: pooled features and tokens, local weights only, frozen layers."""
import pytest
import torch

from smilfit.models import TimmBackbone, count_trainable


def test_resnet_tokens_are_feature_map_cells():
    bb = TimmBackbone('resnet18')
    out = bb(torch.randn(2, 3, 64, 64))
    # 64 px / stride 32 = 2 x 2 cells of 512 channels; the pooled feature is their mean.
    assert out['pooled'].shape == (2, 512) and out['tokens'].shape == (2, 4, 512)
    assert bb.out_dim == 512
    assert torch.allclose(out['pooled'], out['tokens'].mean(1), atol=1e-5)


def test_vit_tokens_drop_the_class_token():
    bb = TimmBackbone('vit_tiny_patch16_224', model_kwargs=dict(img_size=64))
    out = bb(torch.randn(2, 3, 64, 64))
    assert out['tokens'].shape == (2, 16, 192)      # (64 / 16)^2 patches, no class token
    assert out['pooled'].shape == (2, 192)
    with pytest.raises(ValueError, match='images'):
        bb(torch.randn(2, 64, 64))


def test_weights_come_from_a_local_file_only(tmp_path):
    with pytest.raises(ValueError, match='never downloads'):
        TimmBackbone('test_resnet', pretrained=True)
    with pytest.raises(ValueError, match='local file'):
        TimmBackbone('test_resnet', checkpoint='https://example.com/w.pth')
    with pytest.raises(FileNotFoundError):
        TimmBackbone('test_resnet', checkpoint=str(tmp_path / 'missing.pth'))
    torch.manual_seed(1)
    src = TimmBackbone('test_resnet')
    path = tmp_path / 'w.pth'
    # A classifier checkpoint: backbone keys + a classification head that is dropped.
    state = dict(src.model.state_dict(), **{'fc.weight': torch.zeros(10, 96),
                                            'fc.bias': torch.zeros(10)})
    torch.save({'state_dict': state}, path)
    torch.manual_seed(2)
    dst = TimmBackbone('test_resnet', checkpoint=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(dst(x)['pooled'], src.eval()(x)['pooled'])
    torch.save({'conv1.weight': torch.zeros(1)}, path)
    with pytest.raises(KeyError, match='does not fit'):
        TimmBackbone('test_resnet', checkpoint=str(path))


def test_frozen_layers_keep_weights_and_batchnorm_statistics():
    bb = TimmBackbone('resnet18', frozen=2)          # conv1 and bn1
    assert not bb.model.conv1.weight.requires_grad and not bb.model.bn1.weight.requires_grad
    assert bb.model.layer1[0].conv1.weight.requires_grad
    bb.train()
    assert not bb.model.bn1.training and bb.model.layer1[0].bn1.training
    all_frozen = TimmBackbone('test_resnet', frozen=True)
    assert count_trainable(all_frozen) == 0
    by_name = TimmBackbone('test_vit', frozen=['patch_embed', 'blocks.0'],
                           model_kwargs=dict(img_size=64))
    assert not by_name.model.blocks[0].attn.qkv.weight.requires_grad
    assert by_name.model.blocks[1].attn.qkv.weight.requires_grad
    with pytest.raises(KeyError, match='match no parameter'):
        TimmBackbone('test_resnet', frozen=['nonexistent'])
