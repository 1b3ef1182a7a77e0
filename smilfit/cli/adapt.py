"""``tools/adapt.py CONFIG CHECKPOINT --session NAME``: test-time adaptation to one video.

SMAL4V-style online fine-tuning: a trained regressor (a ``TemporalRegressor`` on clips, or
a frame regressor on the session's frames) is fine-tuned on ONE session (video) of the
config's dataset with sparse 2D annotations: keypoint (and silhouette) losses only on the
annotated frames, the model's temporal terms on every frame, never ground-truth
parameters (:func:`smilfit.models.adapt_to_video`). The adapted weights are written as a
checkpoint that ``tools/test.py`` and ``tools/infer.py`` read like any other, plus a JSON
summary of the 2D keypoint error on the annotated and the other frames, before and after.

Annotated frames: every ``--annotated-every`` N-th frame of the session (frame numbers
divisible by N), or an explicit ``--annotated-frames 0 8 16`` list. Settings default to
the config's ``adapt_cfg = dict(split=..., clip_length=..., annotated_every=..., n_steps=...,
lr=..., parameters='all'|'head', loss_weights=dict(...))`` where given.

Examples::

    python tools/adapt.py configs/regression/synthetic_temporal_resnet18.py \\
        work_dirs/synthetic_temporal_resnet18/iter_100.pth --session synthetic_0003
    python tools/adapt.py CONFIG CHECKPOINT --session cam_rig_day2 --annotated-frames 0 40 \\
        --n-steps 50 --lr 5e-5 --parameters head --out adapted.pth
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from mmengine.config import DictAction

if TYPE_CHECKING:  # annotations only: importing torch would slow --help down
    import torch

from . import prog_name
from .errors import USER_ERRORS, report_error

#: adapt_cfg defaults (the config's adapt_cfg, then the command line, override them).
ADAPT_DEFAULTS = dict(split=None, clip_length=None, annotated_every=4, annotated_frames=None,
                      n_steps=30, lr=1e-4, parameters='all', loss_weights={})


class AdaptError(ValueError):
    """The command line, config or data cannot make an adaptation run."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog_name('adapt'), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='regression config (.py) the checkpoint was trained with')
    parser.add_argument('checkpoint', help='checkpoint of tools/train.py to adapt')
    parser.add_argument('--session', required=True,
                        help='name of the session (video) to adapt to')
    parser.add_argument('--split', default=None,
                        help='dataset split holding the session (default: adapt_cfg.split, '
                             'else every session)')
    parser.add_argument('--annotated-every', type=int, default=None, metavar='N',
                        help='frames whose number is divisible by N are annotated')
    parser.add_argument('--annotated-frames', type=int, nargs='+', default=None,
                        metavar='FRAME', help='explicit annotated frame numbers')
    parser.add_argument('--clip-length', type=int, default=None,
                        help='frames per clip for a temporal model (default: the whole '
                             'session as one clip)')
    parser.add_argument('--n-steps', type=int, default=None, help='optimisation steps')
    parser.add_argument('--lr', type=float, default=None, help='Adam learning rate')
    parser.add_argument('--parameters', choices=['all', 'head'], default=None,
                        help="what is fine-tuned ('head': the head and temporal module)")
    parser.add_argument('--out', default=None,
                        help='adapted checkpoint (default: <checkpoint>_adapted_<session>.pth)')
    parser.add_argument('--device', default='cpu', help='torch device (default cpu)')
    parser.add_argument('--seed', type=int, default=0, help='torch seed')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        metavar='KEY=VALUE', help='override config entries')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser


def adapt_settings(cfg, args) -> Dict[str, Any]:
    """ADAPT_DEFAULTS < the config's ``adapt_cfg`` < command-line options."""
    settings = copy.deepcopy(ADAPT_DEFAULTS)
    given = dict(cfg.get('adapt_cfg') or {})
    unknown = sorted(set(given) - set(ADAPT_DEFAULTS))
    if unknown:
        raise AdaptError(f'adapt_cfg: unknown keys {unknown}; known: {sorted(ADAPT_DEFAULTS)}')
    settings.update(given)
    for key in ('split', 'clip_length', 'n_steps', 'lr', 'parameters'):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if args.annotated_frames is not None:
        settings['annotated_frames'] = list(args.annotated_frames)
    if args.annotated_every is not None:
        settings['annotated_every'] = args.annotated_every
        settings['annotated_frames'] = args.annotated_frames
    if settings['annotated_frames'] is None and int(settings['annotated_every']) < 1:
        raise AdaptError(f'annotated_every must be >= 1, got {settings["annotated_every"]}')
    if int(settings['n_steps']) < 1 or not float(settings['lr']) > 0:
        raise AdaptError(f'n_steps must be >= 1 and lr > 0, got {settings["n_steps"]}, '
                         f'{settings["lr"]}')
    return settings


def session_batch(cfg, model, session: str, settings: Dict[str, Any]) -> Dict[str, Any]:
    """The session's frames as one batch: clips (B, T, ...) for a temporal model, frames
    (T, ...) otherwise (test pipeline, no augmentation), and ``frame`` numbers and
    ``frame_valid`` flags shaped like the batch's leading dims."""
    import torch  # not at the top: fast --help
    from mmengine.dataset import default_collate

    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.models import TemporalRegressor
    from smilfit.registry import DATASETS
    import smilfit.datasets.clip_dataset  # noqa: F401,E501  (registers ClipHDF5Dataset)

    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    if loader is None:
        raise AdaptError('the config has no test_dataloader/val_dataloader to read the '
                         'session from')
    ds_cfg = copy.deepcopy(dict(loader['dataset']))
    for key in ('clip_length', 'clip_stride', 'min_valid_frames', 'indices'):
        ds_cfg.pop(key, None)
    ds_cfg.update(split=settings['split'], test_mode=True)
    temporal = isinstance(model, TemporalRegressor)
    frames_ds = DATASETS.build(dict(ds_cfg, type='MultiViewHDF5Dataset'))
    names = frames_ds.reader.session_names
    if session not in names:
        raise AdaptError(f'session {session!r} is not in {frames_ds.ann_file} (it has '
                         f'{list(names)[:20]}{" ..." if len(names) > 20 else ""})')
    s_index = list(names).index(session)
    rows = [i for i in range(len(frames_ds))
            if frames_ds.get_data_info(i)['session_index'] == s_index]
    if not rows:
        raise AdaptError(f'session {session!r} has no samples in split '
                         f'{settings["split"]!r}; pass --split or check min_valid_views')
    if not temporal:
        items = [frames_ds[i] for i in rows]
        batch = default_collate(items)
        batch['frame'] = torch.tensor([frames_ds.get_data_info(i)['frame'] for i in rows])
        batch['frame_valid'] = torch.ones(len(rows), dtype=torch.bool)
        return batch
    numbers = [frames_ds.get_data_info(i)['frame'] for i in rows]
    T = int(settings['clip_length'] or (max(numbers) - min(numbers) + 1))
    clip_ds = DATASETS.build(dict(ds_cfg, type='ClipHDF5Dataset', clip_length=T,
                                  clip_stride=T))
    clips = [i for i in range(len(clip_ds))
             if clip_ds.get_data_info(i)['session_index'] == s_index]
    batch = default_collate([clip_ds[i] for i in clips])
    batch['frame'] = batch['data_samples']['frame']
    batch['frame_valid'] = batch['data_samples']['frame_valid']
    return batch


def annotated_mask(frames: torch.Tensor, valid: torch.Tensor,
                   settings: Dict[str, Any]) -> torch.Tensor:
    """(...,) bool: the real frames that are annotated."""
    import torch  # not at the top: fast --help
    if settings['annotated_frames'] is not None:
        wanted = torch.as_tensor(list(settings['annotated_frames']), dtype=frames.dtype)
        mask = (frames[..., None] == wanted).any(-1)
    else:
        mask = frames % int(settings['annotated_every']) == 0
    mask = mask & valid.to(torch.bool)
    if not bool(mask.any()):
        raise AdaptError(f'no frame of the session is annotated (frames '
                         f'{frames.flatten().tolist()[:20]}, settings '
                         f'annotated_every={settings["annotated_every"]}, '
                         f'annotated_frames={settings["annotated_frames"]})')
    return mask


def keypoint_errors(model, batch: Dict[str, Any], annotated: torch.Tensor
                    ) -> Dict[str, float]:
    """Mean 2D keypoint error (px) over visible keypoints of valid views, on the annotated
    and on the other real frames (NaN where there are none)."""
    import torch  # not at the top: fast --help
    was_training = model.training
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=batch['inputs'],
                                            data_samples=batch['data_samples']), False)
        preds = model(**data, mode='predict')
    model.train(was_training)
    pred = torch.stack([p['pred_keypoints_2d'] for p in preds])        # (F, C, N, 2)
    gt = torch.stack([p['gt_keypoints_2d'] for p in preds])
    vis = torch.stack([p['visible'] for p in preds]).to(torch.bool)
    if 'view_valid' in preds[0]:
        vis = vis & torch.stack([p['view_valid'] for p in preds]).to(torch.bool)[..., None]
    err = (pred - gt).norm(dim=-1)
    vis = vis & torch.isfinite(err)
    ann = annotated.reshape(-1).cpu()
    real = batch['frame_valid'].reshape(-1).to(torch.bool).cpu()
    out = {}
    for name, sel in (('annotated', ann & real), ('other', ~ann & real)):
        m = vis & sel[:, None, None]
        out[name] = float(err[m].mean()) if bool(m.any()) else float('nan')
    return out


def run(args) -> Dict[str, Any]:
    import torch  # not at the top: fast --help
    from smilfit.apis.inference import load_regressor
    from smilfit.engine.checkpoint_io import load_checkpoint_file
    from smilfit.models import adapt_to_video
    from smilfit.utils.atomic import atomic_path, write_text

    torch.manual_seed(args.seed)
    model, cfg = load_regressor(args.checkpoint, args.config, device=args.device,
                                cfg_options=args.cfg_options or None)
    settings = adapt_settings(cfg, args)
    batch = session_batch(cfg, model, args.session, settings)
    mask = annotated_mask(batch['frame'], batch['frame_valid'], settings)
    clip_batch = dict(inputs=batch['inputs'], data_samples=batch['data_samples'])
    before = keypoint_errors(model, batch, mask)
    history = adapt_to_video(model, clip_batch, mask, n_steps=int(settings['n_steps']),
                             lr=float(settings['lr']), parameters=settings['parameters'],
                             loss_weights=dict(settings['loss_weights'] or {}),
                             progress=not args.no_progress)
    after = keypoint_errors(model, batch, mask)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_name(
        f'{Path(args.checkpoint).stem}_adapted_{args.session}.pth')
    ckpt = load_checkpoint_file(args.checkpoint)
    meta = dict(ckpt.get('meta', {})) if isinstance(ckpt, dict) else {}
    summary = dict(session=args.session, checkpoint=str(args.checkpoint), out=str(out),
                   annotated_frames=batch['frame'][mask].tolist(),
                   num_frames=int(batch['frame_valid'].sum()), settings=dict(
                       settings, loss_weights=dict(settings['loss_weights'] or {})),
                   error_before=before, error_after=after, loss_history=history)
    meta['adapt'] = {k: v for k, v in summary.items() if k != 'loss_history'}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save(dict(meta=meta, state_dict=state), tmp)
    write_text(out.with_suffix('.json'), json.dumps(summary, indent=2))
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except USER_ERRORS as err:
        return report_error('adapt', err)
    b, a = summary['error_before'], summary['error_after']
    print(f"adapted to {summary['session']} ({summary['num_frames']} frames, "
          f"{len(summary['annotated_frames'])} annotated): 2D error annotated "
          f"{b['annotated']:.2f} -> {a['annotated']:.2f} px, other {b['other']:.2f} -> "
          f"{a['other']:.2f} px; wrote {summary['out']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
