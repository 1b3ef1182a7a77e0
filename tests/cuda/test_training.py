"""Training on CUDA: tools/train.py's config with --amp (bf16 and fp16), a few steps of the
multi-view regressor on synthetic data, validation, and the checkpoint it writes."""
import math
import textwrap

import pytest
import torch

from smilfit.cli import train as train_cli
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.gpu

CONFIG = REPO_ROOT / 'configs' / 'regression' / 'synthetic_multiview_resnet18.py'


def tiny_config(tmp_path):
    """The shipped multi-view config on 16 frames, with a tiny backbone and 4 iterations."""
    h5 = tmp_path / 'synthetic.h5'
    text = f'''
        _base_ = [{str(CONFIG)!r}]
        data = dict(path={str(h5)!r}, synthetic=dict(num_sessions=2, frames_per_session=8))
        model = dict(backbone=dict(model_name='test_resnet'), neck=dict(dim=32),
                     head=dict(dim=32, depth=1))
        train_dataloader = dict(batch_size=4, dataset=dict(ann_file={str(h5)!r}))
        val_dataloader = dict(dataset=dict(ann_file={str(h5)!r}))
        test_dataloader = val_dataloader
        train_cfg = dict(max_iters=4, val_interval=4)
        param_scheduler = []
        default_hooks = dict(checkpoint=dict(interval=4), logger=dict(interval=1))
    '''
    path = tmp_path / 'tiny.py'
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize('amp,compile_loss', [('bf16', False), ('fp16', False),
                                               ('bf16', True)])
def test_amp_training_steps_validation_and_checkpoint(tmp_path, amp, compile_loss):
    """Training steps, validation and checkpoint with AMP; with ``compile_loss`` the head
    and the losses run compiled by inductor (Triton kernels) under autocast."""
    from mmengine.optim import AmpOptimWrapper

    from smilfit.apis.fitting import prepare_data_once
    from smilfit.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    work = tmp_path / 'work'
    args = train_cli.build_parser().parse_args(
        [str(tiny_config(tmp_path)), '--work-dir', str(work), '--amp', '--amp-dtype', amp])
    cfg = train_cli.build_config(args)
    cfg.model.compile_loss = compile_loss
    prepare_data_once(cfg)
    runner = train_cli.build_runner(cfg)
    runner.train()
    assert isinstance(runner.optim_wrapper, AmpOptimWrapper)
    assert runner.optim_wrapper.cast_dtype == dict(bf16=torch.bfloat16, fp16=torch.float16)[amp]
    assert all(p.device.type == 'cuda' for p in runner.model.parameters())
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())
    assert math.isfinite(runner.message_hub.get_scalar('train/loss').current())
    metrics = runner.val()
    assert math.isfinite(metrics['reproj/mean'])
    assert (work / 'iter_4.pth').is_file()
    assert set(runner.model._compiled) == ({'head', 'score'} if compile_loss else set())


def test_inference_on_cuda_matches_cpu(tmp_path):
    """A trained checkpoint loaded on each device predicts the same bodies."""
    from mmengine.dataset import default_collate

    from smilfit.apis.inference import load_regressor
    from smilfit.apis.fitting import prepare_data_once
    from smilfit.registry import DATASETS
    from smilfit.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    work = tmp_path / 'work'
    assert train_cli.main([str(tiny_config(tmp_path)), '--work-dir', str(work)]) == 0
    ckpt = work / 'iter_4.pth'
    cpu_model, cfg = load_regressor(ckpt, device='cpu')
    gpu_model, _ = load_regressor(ckpt, device='cuda')
    prepare_data_once(cfg)
    ds = DATASETS.build(dict(cfg.test_dataloader.dataset, pipeline=[dict(type='PackInputs')]))
    batch = default_collate([ds[i] for i in range(3)])
    assert all(p.device.type == 'cuda' for p in gpu_model.parameters())
    with torch.no_grad():
        cpu = cpu_model.test_step(batch)
        gpu = gpu_model.test_step(batch)  # the data preprocessor moves the batch there
    for c, g in zip(cpu, gpu):
        for key in ('pred_keypoints_3d', 'pred_keypoints_2d'):
            scale = float(c[key].abs().max())
            torch.testing.assert_close(g[key].cpu(), c[key], rtol=0, atol=1e-3 * scale)
