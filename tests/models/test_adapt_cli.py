"""tools/adapt.py: test-time adaptation from a config and a checkpoint."""
import json

import pytest
import torch
from mmengine.config import Config

from smilfit.cli.adapt import AdaptError, annotated_mask, main
from smilfit.registry import MODELS
from smilfit.utils import register_all_modules

from ..conftest import REPO_ROOT

CONFIG = REPO_ROOT / 'configs' / 'regression' / 'synthetic_temporal_resnet18.py'
TINY = ['model.backbone.model_name=test_resnet', 'model.neck.dim=32', 'model.neck.depth=1',
        'model.head.dim=32', 'model.head.depth=1']


@pytest.fixture
def tiny_checkpoint(tmp_path, synthetic_h5):
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.backbone.model_name = 'test_resnet'
    cfg.model.neck.update(dim=32, depth=1)
    cfg.model.head.update(dim=32, depth=1)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    path = tmp_path / 'tiny.pth'
    torch.save(dict(meta=dict(note='test'), state_dict=model.state_dict()), str(path))
    return path


def _args(ckpt, h5, out, *extra):
    return [str(CONFIG), str(ckpt), '--session', 'synthetic_0000', '--split', 'train',
            '--out', str(out), '--no-progress', '--cfg-options', *TINY,
            f'test_dataloader.dataset.ann_file={h5}',
            'test_dataloader.dataset.split_ratios=[1.0,0.0,0.0]', *extra]


def test_adapt_lowers_annotated_error_and_writes_checkpoint(tmp_path, tiny_checkpoint,
                                                            synthetic_h5):
    out = tmp_path / 'adapted.pth'
    rc = main(_args(tiny_checkpoint, synthetic_h5, out, '--annotated-every', '2',
                    '--n-steps', '20', '--lr', '1e-3'))
    assert rc == 0
    summary = json.loads(out.with_suffix('.json').read_text())
    assert summary['annotated_frames'] == [0, 2] and summary['num_frames'] == 4
    before, after = summary['error_before']['annotated'], summary['error_after']['annotated']
    assert after < 0.85 * before, (before, after)      # measured 3.65 -> 2.5
    assert len(summary['loss_history']) == 20
    ckpt = torch.load(str(out), weights_only=False)
    assert ckpt['meta']['note'] == 'test' and ckpt['meta']['adapt']['session'] == \
        'synthetic_0000'
    orig = torch.load(str(tiny_checkpoint), weights_only=False)['state_dict']
    key = 'head.body_out.weight'
    assert not torch.equal(ckpt['state_dict'][key], orig[key])      # weights changed
    assert set(ckpt['state_dict']) == set(orig)


def test_adapt_errors(tmp_path, tiny_checkpoint, synthetic_h5, capsys):
    out = tmp_path / 'x.pth'
    args = _args(tiny_checkpoint, synthetic_h5, out)
    args[args.index('synthetic_0000')] = 'no_such_session'
    assert main(args) == 1
    assert 'no_such_session' in capsys.readouterr().err and not out.exists()
    with pytest.raises(AdaptError, match='no frame'):
        annotated_mask(torch.tensor([1, 3]), torch.tensor([True, True]),
                       dict(annotated_frames=None, annotated_every=2))
