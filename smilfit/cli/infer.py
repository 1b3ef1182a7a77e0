"""``tools/infer.py CHECKPOINT INPUT...``: run a trained regressor on new data.

Inputs (single- or multi-view is the model's ``num_views``):

- single view: a video file, or a folder of images; ``--crop-mode default|centred|
  bbox_crop`` as in preprocessing (``bbox_crop`` boxes each instance of a SLEAP file,
  ``--bbox-slp``: one prediction per instance, frames without instances skipped);
  ``--camera-smoothing ALPHA`` smooths the predicted camera over time;
- multi view: a sleap-anipose session folder (``calibration.toml`` and one folder per
  camera, named as in the calibration, with its video and its SLEAP file: every frame of
  the videos, boxed by the SLEAP files where the network was trained on boxes); one
  synchronised video per camera plus ``--calibration calibration.toml`` (anipose; videos
  matched to cameras by name, or ``--camera-names``); or one smilfit HDF5 dataset
  (``.h5``: stored images and cameras). A network trained on crops around the animal
  (``tools/preprocess_sleap.py --crop-mode bbox_crop``) runs on every frame of the videos
  with ``--bbox-slp`` and one SLEAP file per camera (SLEAP's 2D predictions of each
  video; animals matched across cameras by track).

Crops: ``--crop-mode``, ``--target-size`` and ``--bbox-margin`` default to how the
network's training images were cropped (the checkpoint records it); a value that differs
is used, with a warning. Checkpoints that do not record it default to the whole frame.

Outputs in ``--out-dir`` (default ``work_dirs/infer/<input name>``):
``predictions.h5`` (per item: session, frame, instance, parameters, joints, 3D keypoints, 2D
keypoints and cameras in source pixels, optional features), ``predictions.slp`` (the
model's keypoints as SLEAP predicted instances on the input videos), ``overlay.mp4``
(``--video overlay|side_by_side|none``), ``meshes/*.obj`` (``--meshes``).
Work is streamed in chunks written as they finish (``chunks/``): memory stays flat on
long videos and ``--resume`` continues an interrupted run.

Examples::

    python tools/infer.py work_dirs/mouse_session_resnet18/iter_400.pth \\
        ../shared/data/sleap_anipose_minimal_session/minimal_session
    python tools/infer.py work_dirs/single/iter_5000.pth clip.mp4 --crop-mode bbox_crop \\
        --bbox-slp clip.slp --target-size 256 --out-dir work_dirs/infer/clip
    python tools/infer.py CKPT back.mp4 mid.mp4 side.mp4 top.mp4 \\
        --calibration calibration.toml --video side_by_side --video-scale 0.5
    python tools/infer.py CKPT back/back.mp4 mid/mid.mp4 side/side.mp4 top/top.mp4 \\
        --calibration calibration.toml --crop-mode bbox_crop --target-size 128 \\
        --bbox-slp back/back.slp mid/mid.slp side/side.slp top/top.slp
    python tools/infer.py CKPT data/mouse_session/minimal_session.h5 --meshes
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

from mmengine.config import DictAction

from . import prog_name
from .errors import USER_ERRORS, report_error
from .threads import wait_passively_if_threaded


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog_name('infer'), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', help='regressor checkpoint (.pth) from tools/train.py')
    parser.add_argument('inputs', nargs='+', help='a video, a folder of images, an HDF5 '
                        'dataset, a session folder (calibration.toml and a folder per '
                        'camera), or one video per camera (with --calibration)')
    parser.add_argument('--config', help='config file (default: the one in the checkpoint)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        metavar='KEY=VALUE', help='override config entries')
    parser.add_argument('--out-dir', help='output folder (default work_dirs/infer/<input>)')
    parser.add_argument('--calibration', help='anipose calibration.toml of a multi-camera rig')
    parser.add_argument('--camera-names', nargs='+', help="calibration camera of each video "
                        '(default: matched by file or folder name)')
    parser.add_argument('--frames', help='frames A:B (A <= frame < B), or A:B:STEP')
    parser.add_argument('--crop-mode', choices=['default', 'centred', 'bbox_crop'],
                        help='whole frame, centre square, or a square box around each '
                             'SLEAP instance (needs --bbox-slp, or a session folder); '
                             'default: as the network was trained, else the whole frame')
    parser.add_argument('--bbox-slp', nargs='+', help='SLEAP file whose instances give the '
                        'boxes; several videos: one per camera, in the videos\' order (or '
                        'one holding every video)')
    parser.add_argument('--bbox-follow', action='store_true',
                        help='bbox_crop: box frames and cameras the SLEAP files leave empty '
                             'around the network\'s keypoints of the previous frame (one '
                             'animal; frames are predicted one by one)')
    parser.add_argument('--bbox-margin', type=float,
                        help='bbox_crop margin per side, fraction of the box (default: as '
                             'the network was trained, else 0.15)')
    parser.add_argument('--target-size', type=int, help='crops are resized to this square '
                        'size before the model\'s own pipeline (default: as the network '
                        'was trained, else the crop size)')
    parser.add_argument('--camera-smoothing', type=float, default=0.0, metavar='ALPHA',
                        help='exponential smoothing of predicted cameras over time, in '
                             '[0, 1) (0: off)')
    parser.add_argument('--chunk-size', type=int, default=64,
                        help='frames per chunk written to disk (default 64)')
    parser.add_argument('--batch-size', type=int, default=16, help='items per model call')
    parser.add_argument('--meshes', action='store_true', help='write one .obj per item')
    parser.add_argument('--features', action='store_true', help='store the model features')
    parser.add_argument('--video', default='overlay', choices=['overlay', 'side_by_side', 'none'],
                        help='overlay video layout (default overlay)')
    parser.add_argument('--video-scale', type=float, default=1.0,
                        help='scale of the video frames (e.g. 0.5: faster)')
    parser.add_argument('--mesh-overlay', action='store_true',
                        help='render the mesh into the video (slower)')
    parser.add_argument('--no-slp', action='store_true', help='do not write the .slp')
    parser.add_argument('--resume', action='store_true', help='continue an interrupted run')
    parser.add_argument('--overwrite', action='store_true', help='replace earlier results')
    parser.add_argument('--device', default='cpu', help="torch device (default 'cpu')")
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    return parser


def parse_frames(spec: Optional[str]) -> Optional[slice]:
    """``'A:B'`` or ``'A:B:STEP'`` -> slice (None: every frame)."""
    if spec is None:
        return None
    parts = spec.split(':')
    if len(parts) not in (2, 3) or not all(p == '' or p.lstrip('-').isdigit() for p in parts):
        raise ValueError(f'--frames must be A:B or A:B:STEP, got {spec!r}')
    vals = [int(p) if p else None for p in parts]
    return slice(*vals)


def build_source(args, frames: Optional[slice]):
    """The frame source the inputs describe (see the module docstring)."""
    import numpy as np

    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.apis.inference import (HDF5Frames, ImageFolderFrames, InferenceError,
                                        SyncedVideoFrames, VideoFrames)
    inputs = [Path(p) for p in args.inputs]
    for p in inputs:
        if not p.exists():
            raise FileNotFoundError(f'input {p} does not exist')

    def select(n: int):
        return None if frames is None else np.arange(n)[frames]

    if args.calibration or len(inputs) > 1:
        if not args.calibration:
            raise InferenceError('several videos are a multi-camera rig: pass --calibration')
        n = min(VideoFrames(p).num_frames_in_video for p in inputs)
        return SyncedVideoFrames(inputs, args.calibration, args.camera_names, select(n))
    path = inputs[0]
    if path.is_dir():
        count = sum(1 for q in path.iterdir() if q.suffix.lower() in
                    ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff'))
        return ImageFolderFrames(path, select(count))
    if path.suffix.lower() in ('.h5', '.hdf5'):
        # Imported only when this branch runs (a heavy or optional part).
        from smilfit.datasets import DatasetReader
        with DatasetReader(path) as reader:
            n = len(reader)
        return HDF5Frames(path, select(n))
    source = VideoFrames(path)
    if frames is not None:
        source = VideoFrames(path, select(source.num_frames_in_video))
    return source


def stores_crops(args) -> bool:
    """Whether the input is a smilfit dataset, whose images are crops already."""
    return len(args.inputs) == 1 and Path(args.inputs[0]).suffix.lower() in ('.h5', '.hdf5')


def set_crops(args, dataset_meta, cfg) -> None:
    """Fill ``args.crop_mode``, ``target_size`` and ``bbox_margin`` where the command line
    left them open: as the network's training images were cropped (its checkpoint's
    ``dataset_meta``; for older checkpoints, the config's training file where it still
    exists), else the whole frame; say so, and warn where a given one differs. A dataset
    input is cropped already and keeps the whole-frame defaults."""
    from smilfit.apis.inference import crop_settings, trained_crops, training_data_crops
    asked = dict(crop_mode=args.crop_mode, target_size=args.target_size,
                 bbox_margin=args.bbox_margin)
    trained = None
    if not stores_crops(args):
        trained = trained_crops(dataset_meta) or training_data_crops(cfg)
    settings, notes = crop_settings(asked, trained)
    for note in notes:
        print(f'{prog_name("infer")}: warning: {note}', file=sys.stderr)
    given = [k for k, v in asked.items() if v is not None]
    if trained is not None and len(given) < len(asked):
        size, mode = settings['target_size'], settings['crop_mode']
        print(f'crops: {mode}' + (f', {size} px' if size else '')
              + (f", margin {settings['bbox_margin']:g}" if mode == 'bbox_crop' else '')
              + (" (the network's training crops where not given)" if given
                 else ' (as the network was trained)'))
    for key, value in settings.items():
        setattr(args, key, value)


def use_session_folder(args) -> None:
    """A session folder as input becomes its videos, calibration and camera names, and,
    for ``bbox_crop`` without ``--bbox-slp``, its cameras' SLEAP files as the boxes."""
    from smilfit.apis.inference import InferenceError, is_session_folder, read_session_folder
    if len(args.inputs) != 1 or not is_session_folder(args.inputs[0]):
        return
    if args.calibration:
        raise InferenceError(f'{args.inputs[0]} is a session folder with its own '
                             'calibration.toml: leave out --calibration')
    session = read_session_folder(args.inputs[0])
    args.inputs = [str(v) for v in session.videos]
    args.calibration = str(session.calibration)
    args.camera_names = args.camera_names or session.camera_names
    if args.crop_mode == 'bbox_crop' and not args.bbox_slp:
        args.bbox_slp = [str(p) for p in session.boxes()]


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    wait_passively_if_threaded(args.threads)   # (before the first torch import)
    import torch

    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.apis.inference import (FollowingBoxes, InferenceError, RigBoxes,
                                        SleapBoxes, SyncedVideoFrames, build_test_pipeline,
                                        load_regressor, run_inference)
    start = time.perf_counter()
    try:
        if args.threads < 1:
            raise ValueError('--threads must be >= 1')
        torch.set_num_threads(args.threads)
        frames = parse_frames(args.frames)
        model, cfg = load_regressor(args.checkpoint, args.config, args.device,
                                    args.cfg_options)
        pipeline = build_test_pipeline(cfg)
        name = Path(args.inputs[0]).stem
        set_crops(args, model.dataset_meta, cfg)
        use_session_folder(args)
        source = build_source(args, frames)
        bbox = None
        if args.bbox_slp and source.num_views > 1:
            if not isinstance(source, SyncedVideoFrames):
                raise InferenceError('--bbox-slp boxes video frames; a dataset (.h5) '
                                     'holds its crops already')
            bbox = RigBoxes(args.bbox_slp, list(source.video_refs))
        elif args.bbox_slp:
            if len(args.bbox_slp) != 1:
                raise InferenceError('one video: pass one --bbox-slp file')
            bbox = SleapBoxes(args.bbox_slp[0])
        if bbox is not None and args.crop_mode != 'bbox_crop':
            raise InferenceError('--bbox-slp is used with --crop-mode bbox_crop')
        if args.bbox_follow:
            if bbox is None:
                raise InferenceError('--bbox-follow completes the boxes of SLEAP files: '
                                     'pass --bbox-slp (or a session folder)')
            bbox = FollowingBoxes(bbox)
        out_dir = Path(args.out_dir) if args.out_dir else Path('work_dirs') / 'infer' / name
        result = run_inference(
            model, pipeline, source, out_dir, crop_mode=args.crop_mode, bbox=bbox,
            bbox_margin=args.bbox_margin, target_size=args.target_size,
            camera_smoothing=args.camera_smoothing, chunk_size=args.chunk_size,
            batch_size=args.batch_size, save_meshes=args.meshes, save_features=args.features,
            video=None if args.video == 'none' else args.video,
            video_scale=args.video_scale, mesh_overlay=args.mesh_overlay,
            slp=not args.no_slp, resume=args.resume, overwrite=args.overwrite,
            progress=not args.no_progress, body_model=cfg.model.get('body_model'))
    except USER_ERRORS as err:
        return report_error('infer', err)
    seconds = time.perf_counter() - start
    print(f"{result['num_items']} predictions on {result['num_frames']} frames in "
          f'{seconds:.1f} s ({result["num_frames"] / max(seconds, 1e-9):.1f} frames/s, '
          f'everything included): {result["predictions"]}'
          + (f', {result["slp"]}' if result['slp'] else '')
          + (f', {result["video"]}' if result['video'] else '')
          + (f', {len(result["meshes"])} meshes' if result['meshes'] else ''))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
