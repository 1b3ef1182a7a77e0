"""Training throughput: images/s of forward+backward for the regressors and their backbone.

Builds the single- and multi-view regressors of ``configs/_base_/models`` (the
backbone by name, e.g. ``resnet50``, ``vit_base_patch16_224``), feeds them batches of a
synthetic 4-view dataset generated on first use (HDF5, so the loader is the real one) and
prints a table:

- ``backbone``: the bare timm backbone, forward + backward of its pooled features' sum;
- ``single-view`` / ``multi-view``: the full model in ``mode='loss'`` (body model, cameras,
  handlers), forward + backward of the summed losses;
- ``loader``: samples/s (and images/s) the HDF5 dataset + DataLoader deliver with
  ``--workers`` processes, decoding and resizing included.

The bar (on a GPU): the full model reaches at least 70 % of the bare
backbone's images/s with bf16 AMP, and the loader keeps up. On a CPU the numbers only say
where the time goes.

Usage::

    python benchmarks/train_throughput.py --backbone resnet18 --size 128 --batch 8
    python benchmarks/train_throughput.py --device cuda --amp bf16 --batch 64 --workers 8
    python benchmarks/train_throughput.py --device cuda --amp bf16 --compile-loss
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmengine.config import Config  # noqa: E402
from mmengine.dataset import default_collate  # noqa: E402

from smilfit.utils import register_all_modules  # noqa: E402


def make_data(path: Path, views: int, size: int) -> Path:
    if not path.exists():
        from smilfit.datasets import generate_synthetic_dataset
        path.parent.mkdir(parents=True, exist_ok=True)
        generate_synthetic_dataset(path, num_sessions=4, frames_per_session=16,
                                   num_views=views, image_size=size, masks=False, seed=0)
    return path


def build_model(kind: str, backbone: str, views: int, device: str,
                compile_loss: bool = False):
    from smilfit.registry import MODELS
    name = 'single_view_resnet.py' if kind == 'single' else 'multi_view_resnet.py'
    cfg = Config.fromfile(str(ROOT / 'configs' / '_base_' / 'models' / name))
    model_cfg = cfg.model
    model_cfg.backbone.model_name = backbone
    model_cfg.compile_loss = compile_loss
    if kind == 'multi':
        model_cfg.num_views = views
    return MODELS.build(model_cfg).to(device).train()


def dataset(path: Path, kind: str, size: int):
    from smilfit.registry import DATASETS
    return DATASETS.build(dict(
        type='SingleViewHDF5Dataset' if kind == 'single' else 'MultiViewHDF5Dataset',
        ann_file=str(path), pipeline=[dict(type='ResizeViews', size=(size, size)),
                                      dict(type='PackInputs')]))


def to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def timed(step, iters: int, device: str) -> float:
    """Seconds per call of ``step`` (after three warm-up calls: compiling takes the
    first two)."""
    for _ in range(3):
        step()
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def loader_rate(ds, batch: int, workers: int, iters: int) -> float:
    """Samples/s the DataLoader delivers in steady state.

    The synthetic file is small (64 frames), so batches are drawn with replacement: with
    ``shuffle=True`` a 64-sample dataset and batch 64 give one batch per epoch, built by
    one worker while the others idle, and every epoch restarts the workers' prefetching
    (what the first GPU run measured: 26 images/s per worker). The first ``workers``
    batches (the prefetch warm-up) are not timed.
    """
    warm = max(1, workers)
    sampler = torch.utils.data.RandomSampler(ds, replacement=True,
                                             num_samples=batch * (warm + iters))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler,
                                         num_workers=workers, collate_fn=default_collate)
    it = iter(loader)
    for _ in range(warm):
        next(it)
    start = time.perf_counter()
    for _ in range(iters):
        next(it)
    return batch * iters / (time.perf_counter() - start)


def print_profile(step, device: str, title: str, steps: int = 3, rows: int = 25) -> None:
    """The operators taking the most time over ``steps`` calls of ``step``."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU]
    if device.startswith('cuda'):
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device.startswith('cuda'):
            torch.cuda.synchronize()
    key = 'cuda_time_total' if device.startswith('cuda') else 'cpu_time_total'
    print(f'\n{title}: top operators over {steps} steps\n```', flush=True)
    print(prof.key_averages().table(sort_by=key, row_limit=rows), flush=True)
    print('```\n', flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--backbone', default='resnet18', help='timm model name')
    parser.add_argument('--size', type=int, default=128, help='image side (pixels)')
    parser.add_argument('--batch', type=int, default=8, help='samples per batch')
    parser.add_argument('--views', type=int, default=4)
    parser.add_argument('--iters', type=int, default=5, help='timed steps per row')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--amp', choices=['none', 'bf16', 'fp16'], default='none')
    parser.add_argument('--workers', type=int, default=0, help='DataLoader workers')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the backbone (the bare one and the one inside '
                             'the models); the first steps compile and are not timed')
    parser.add_argument('--compile-loss', action='store_true',
                        help="the models' compile_loss=True: torch.compile the head and "
                             'the loss computation after the backbone')
    parser.add_argument('--profile', action='store_true',
                        help='also print the top operators of a few full-model steps '
                             "(torch.profiler; CUDA time on a GPU): where the time goes")
    parser.add_argument('--data', default=str(ROOT / 'work_dirs' / 'benchmarks' /
                                              'throughput_4view.h5'))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.amp != 'none' and not args.device.startswith('cuda'):
        raise SystemExit('--amp needs --device cuda')
    register_all_modules()
    path = make_data(Path(args.data), args.views, args.size)
    dtype = dict(bf16=torch.bfloat16, fp16=torch.float16).get(args.amp)
    autocast = (lambda: torch.autocast('cuda', dtype=dtype)) if dtype else contextlib.nullcontext

    where = torch.cuda.get_device_name() if args.device.startswith('cuda') else args.device
    print(f'\n## {args.backbone}, {args.size} px, batch {args.batch}, {args.views} views, '
          f'{where}, amp {args.amp}, backbone {"compiled" if args.compile else "eager"}, '
          f'head and losses {"compiled" if args.compile_loss else "eager"}, '
          f'{torch.get_num_threads()} thread(s)\n')
    print('| what | images per step | s/step | images/s |')
    print('|---|---|---|---|')
    rows = {}
    for kind in ('single', 'multi'):
        ds = dataset(path, kind, args.size)
        batch = to_device(default_collate([ds[i] for i in range(args.batch)]), args.device)
        model = build_model(kind, args.backbone, args.views, args.device, args.compile_loss)
        data = model.data_preprocessor(batch, training=True)
        images = args.batch * (1 if kind == 'single' else args.views)
        # The bare backbone on the same number of images (its own rate depends on it).
        backbone = model.backbone
        flat = data['inputs'].reshape(-1, *data['inputs'].shape[-3:])
        if args.compile:
            # The model calls the same compiled module as the bare backbone row.
            backbone = model.backbone = torch.compile(backbone, dynamic=False)

        def backbone_step():
            backbone.zero_grad(set_to_none=True)
            with autocast():
                pooled = backbone(flat)['pooled']
            pooled.float().sum().backward()
        sec = timed(backbone_step, args.iters, args.device)
        rows['backbone'] = images / sec
        print(f'| backbone ({args.backbone}) | {images} | {sec:.3f} | {images / sec:.1f} |',
              flush=True)

        def model_step():
            model.zero_grad(set_to_none=True)
            with autocast():
                losses = model(data['inputs'], data['data_samples'], mode='loss')
            sum(v for k, v in losses.items() if k.startswith('loss')).float().backward()
        sec = timed(model_step, args.iters, args.device)
        rows[kind] = images / sec
        share = 100 * rows[kind] / rows['backbone']
        print(f'| {kind}-view model | {images} | {sec:.3f} | {images / sec:.1f} '
              f'({share:.0f} % of the backbone) |', flush=True)
        if args.profile:
            print_profile(model_step, args.device, f'{kind}-view model step')

        rate = loader_rate(ds, args.batch, args.workers, args.iters) * images / args.batch
        sec = images / rate
        print(f'| loader ({kind}-view, {args.workers} workers) | {images} | {sec:.3f} | '
              f'{images / sec:.1f} |', flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
