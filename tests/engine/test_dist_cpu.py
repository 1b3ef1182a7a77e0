"""Two-process DDP on the CPU through mmengine's Runner (compat fix 2).

The test starts this file as a script twice (rank 0 and rank 1) with torchrun's
environment variables; each rank trains one iteration on different data and saves
its own (local) gradient and the gradient DDP left for the optimizer step.
"""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

WORLD_SIZE = 2
TIMEOUT_S = 90  # for both workers together: killed after this, never hang


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize('init', ['runner', 'helper'])
def test_ddp_averages_gradients_on_cpu(tmp_path: Path, init: str):
    port = _free_port()
    procs = []
    for rank in range(WORLD_SIZE):
        env = dict(os.environ, MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                   LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE), OMP_NUM_THREADS='1',
                   CUDA_VISIBLE_DEVICES='')  # CPU even where a GPU exists
        procs.append(subprocess.Popen(
            [sys.executable, __file__, str(tmp_path), init], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        pytest.fail(f'DDP workers did not finish within {TIMEOUT_S} s; finished ones said:\n'
                    + '\n'.join(out[-3000:] for out in outputs))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for rank, (proc, out) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f'rank {rank} failed:\n{out[-4000:]}'

    results = [torch.load(tmp_path / f'rank{rank}.pt') for rank in range(WORLD_SIZE)]
    for res in results:
        assert res['backend'] == 'gloo'
        assert res['world_size'] == WORLD_SIZE
        assert res['wrapper'] == 'MMDistributedDataParallel'
    local = [res['local'] for res in results]
    ddp = [res['ddp'] for res in results]
    # Different data per rank -> different local gradients ...
    assert any(not torch.allclose(a, b) for a, b in zip(local[0], local[1]))
    # ... but DDP leaves the same, averaged gradient on every rank.
    for g0, g1, l0, l1 in zip(ddp[0], ddp[1], local[0], local[1]):
        assert torch.equal(g0, g1)
        torch.testing.assert_close(g0, (l0 + l1) / 2)


# --- worker (run as a script by the test) ---------------------------------------

def _worker(out_dir: str, init: str) -> None:
    import torch.distributed as dist
    import torch.nn as nn
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from mmengine.optim import OptimWrapper
    from mmengine.runner import Runner
    from torch.utils.data import Dataset

    import smilfit.engine.hooks  # noqa: F401  (applies every compat fix, DDP's included)
    from smilfit.engine.compat import cpu_model_wrapper_cfg, init_dist_cpu_safe

    class TinyModel(BaseModel):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1)

        def forward(self, x, y, mode='tensor'):
            out = self.lin(x)
            if mode == 'loss':
                return dict(loss=((out - y) ** 2).mean())
            return out

    class TinyDataset(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):  # DefaultSampler: rank 0 gets 0, 2; rank 1 gets 1, 3
            return dict(x=torch.tensor([i + 1.0, 2.0 * i - 1.0]), y=torch.tensor([float(i)]))

    recorded: dict = {}

    class RecordingOptimWrapper(OptimWrapper):
        """Keeps the gradients the optimizer steps with (after DDP's all-reduce)."""

        def step(self, **kwargs):
            recorded['ddp'] = [p.grad.detach().clone() for group in self.param_groups
                               for p in group['params']]
            super().step(**kwargs)

    class LocalGradHook(Hook):
        """This rank's own gradient of the batch, without DDP."""

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            module = runner.model.module
            params = {n: p.detach().clone().requires_grad_() for n, p in module.named_parameters()}
            data = module.data_preprocessor(data_batch, True)
            loss = torch.func.functional_call(module, params, args=(), kwargs=dict(**data, mode='loss'))
            recorded['local'] = list(torch.autograd.grad(loss['loss'], list(params.values())))

    if init == 'helper':
        init_dist_cpu_safe('pytorch', timeout=60)
        wrapper_cfg = cpu_model_wrapper_cfg()
    else:  # the Runner initialises with its default nccl dist_cfg; compat makes it gloo
        wrapper_cfg = None

    runner = Runner(
        model=TinyModel(),
        work_dir=os.path.join(out_dir, 'work'),
        experiment_name=f'ddp_cpu_{init}',
        train_dataloader=dict(dataset=TinyDataset(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(type=RecordingOptimWrapper, optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=False, max_iters=1),
        default_hooks=dict(checkpoint=None),
        custom_hooks=[LocalGradHook()],
        launcher='pytorch',
        env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=60)),
        # Runner reads model_wrapper_cfg from its config (a config file's top-level key).
        cfg=dict(model_wrapper_cfg=wrapper_cfg),
        randomness=dict(seed=0),
        default_scope='mmengine',
    )
    runner.train()
    torch.save(dict(local=recorded['local'], ddp=recorded['ddp'], backend=dist.get_backend(),
                    world_size=dist.get_world_size(), wrapper=type(runner.model).__name__),
               os.path.join(out_dir, f'rank{dist.get_rank()}.pt'))
    # Both ranks reach the teardown together: a rank destroying its gloo group while its
    # peer is still in it was seen to abort ("terminate called without an active
    # exception", rank 1, once in CI).
    dist.barrier()
    dist.destroy_process_group()


if __name__ == '__main__':
    _worker(sys.argv[1], sys.argv[2])
