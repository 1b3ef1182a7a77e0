"""Two-process DDP training on the CPU through ``tools/dist_train.sh`` (torchrun ->
``tools/train.py --launcher pytorch`` -> mmengine's Runner, gloo).

Each rank trains one iteration on different data. It records its own (local) gradient of
its batch and the gradient the optimizer stepped with, which DDP must have averaged over
the ranks: equal on both ranks and equal to the mean of the local ones. (SMILify called
``model.module`` and never synchronised: its ranks would keep their local gradients.)

The config loads this module with ``custom_imports`` so the workers register the
recording optimizer wrapper and hook below.
"""
import os
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import torch
from mmengine.dist import get_backend, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper

from smilfit.engine.hooks import unwrap_model
from smilfit.registry import HOOKS, OPTIM_WRAPPERS
from tests.conftest import REPO_ROOT, subprocess_env
from tests.engine.test_train_tool import write_config

WORLD_SIZE = 2
TIMEOUT_S = 150  # the whole torchrun job; killed after this, never hangs


@OPTIM_WRAPPERS.register_module(name='DDPTestRecordingOptimWrapper', force=True)
class RecordingOptimWrapper(OptimWrapper):
    """Keeps the gradients the optimizer steps with (after DDP's all-reduce)."""

    recorded: dict = {}

    def step(self, **kwargs):
        self.recorded['ddp'] = [p.grad.detach().clone() for group in self.param_groups
                                for p in group['params']]
        super().step(**kwargs)


@HOOKS.register_module(name='DDPTestGradientProbe', force=True)
class GradientProbe(Hook):
    """This rank's own gradient of its batch (no DDP), and a dump of everything at the end."""

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        module = unwrap_model(runner.model)
        params = {n: p.detach().clone().requires_grad_() for n, p in module.named_parameters()}
        data = module.data_preprocessor(data_batch, True)
        losses = torch.func.functional_call(module, params, args=(),
                                            kwargs=dict(**data, mode='loss'))
        total = sum(losses.values())
        RecordingOptimWrapper.recorded['local'] = list(
            torch.autograd.grad(total, list(params.values())))

    def after_train(self, runner):
        module = unwrap_model(runner.model)
        torch.save(dict(RecordingOptimWrapper.recorded, backend=get_backend(),
                        world_size=get_world_size(), wrapper=type(runner.model).__name__,
                        params=[p.detach().clone() for p in module.parameters()]),
                   Path(runner.work_dir) / f'rank{get_rank()}.pt')


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_dist_train_averages_gradients_on_cpu(tmp_path: Path):
    cfg_file = write_config(tmp_path / 'ddp_toy.py', textwrap.dedent("""\
        train_dataloader = dict(
            batch_size=2, num_workers=0,
            dataset=dict(type='TrainToolToyDataset', size=4),
            sampler=dict(type='DefaultSampler', shuffle=False),  # rank 0: 0, 2; rank 1: 1, 3
            collate_fn=dict(type='default_collate'))
        train_cfg = dict(by_epoch=False, max_iters=1)
        optim_wrapper = dict(type='DDPTestRecordingOptimWrapper',
                             optimizer=dict(type='SGD', lr=0.1))
        default_hooks = dict(logger=dict(interval=1),
                             checkpoint=dict(interval=1, by_epoch=False))
        log_processor = dict(window_size=1, by_epoch=False)
        custom_hooks = [dict(type='DDPTestGradientProbe')]
        """), imports=('tests.engine.test_train_tool', 'tests.engine.test_ddp_training'))
    work_dir = tmp_path / 'work'
    env = subprocess_env(PORT=str(_free_port()), OMP_NUM_THREADS='1',
                         CUDA_VISIBLE_DEVICES='')  # the CPU path even where a GPU exists
    proc = subprocess.Popen(
        ['bash', str(REPO_ROOT / 'tools' / 'dist_train.sh'), str(cfg_file), str(WORLD_SIZE),
         '--work-dir', str(work_dir)],
        cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    start = time.monotonic()
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f'dist_train.sh did not finish within {TIMEOUT_S} s:\n{out[-4000:]}')
    assert proc.returncode == 0, f'dist_train.sh failed:\n{out[-6000:]}'
    print(f'2-process DDP run: {time.monotonic() - start:.1f} s')

    results = [torch.load(work_dir / f'rank{rank}.pt') for rank in range(WORLD_SIZE)]
    for res in results:
        assert res['backend'] == 'gloo'
        assert res['world_size'] == WORLD_SIZE
        assert res['wrapper'] == 'MMDistributedDataParallel'
    local = [res['local'] for res in results]
    ddp = [res['ddp'] for res in results]
    # different data per rank -> different local gradients ...
    assert any(not torch.allclose(a, b) for a, b in zip(local[0], local[1]))
    # ... but DDP left the same, averaged gradient on every rank ...
    for g0, g1, l0, l1 in zip(ddp[0], ddp[1], local[0], local[1]):
        assert torch.equal(g0, g1)
        torch.testing.assert_close(g0, (l0 + l1) / 2)
    # ... so the ranks' weights stay identical after the step
    for p0, p1 in zip(results[0]['params'], results[1]['params']):
        assert torch.equal(p0, p1)
    # rank 0 wrote the checkpoint, with smilfit's meta data
    ckpt = torch.load(work_dir / 'iter_1.pth')
    assert ckpt['meta']['smilfit']['joint_names'] == ['root', 'tip']
    assert ckpt['meta']['smilfit']['config_data']['launcher'] == 'pytorch'
