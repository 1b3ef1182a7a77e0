"""``tools/visualize.py WORK_DIR``: videos, meshes, animations and plots of a fitting run.

Reads what ``tools/fit.py`` wrote to WORK_DIR (``fit_results.h5`` and the config stamp
``chunks/config.json``), rebuilds the body model from that config, reads cameras, images
and observed keypoints from the fitted dataset, and writes to ``WORK_DIR/visuals``
(or ``--out-dir``):

  <session>.mp4                       every view: mesh + observed/fitted keypoints
  meshes/<session>/frame_<n>.obj      one mesh per frame (--meshes)
  <session>_params.npz / .json        fitted parameters as an animation (--animation)
  final_losses.png, per_joint_errors.png, reprojection_per_camera_<session>.png (--plots)

Without any of --video/--meshes/--animation/--plots, video, animation and plots are made.
Examples:
  python tools/visualize.py work_dirs/demo_mouse
  python tools/visualize.py work_dirs/demo_mouse --video --frames 0:8 --session 0
  python tools/visualize.py work_dirs/mouse_multiview --meshes --mesh-format ply
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional, Tuple

from . import prog_name
from .errors import USER_ERRORS
from .threads import wait_passively_if_threaded


def parse_frames(text: str) -> Tuple[Optional[int], Optional[int]]:
    """``'a:b'`` -> ``(a, b)`` (either side may be empty); ``'a'`` -> ``(a, a + 1)``."""
    try:
        if ':' not in text:
            first = int(text)
            return first, first + 1
        lo, hi = text.split(':', 1)
        return (int(lo) if lo.strip() else None, int(hi) if hi.strip() else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--frames must look like 'a:b', 'a:', ':b' or 'a', "
                                         f'got {text!r}') from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog_name('visualize'), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('work_dir', help='a tools/fit.py output folder (holds fit_results.h5)')
    parser.add_argument('--video', action='store_true', help='one .mp4 per session')
    parser.add_argument('--meshes', action='store_true', help='one mesh file per frame')
    parser.add_argument('--animation', action='store_true',
                        help='fitted parameters as <session>_params.npz + .json')
    parser.add_argument('--plots', action='store_true',
                        help='loss, per-joint and per-camera error plots')
    parser.add_argument('--frames', type=parse_frames, metavar='A:B',
                        help='frame numbers A <= frame < B of every session')
    parser.add_argument('--session', action='append', metavar='NAME_OR_INDEX',
                        help='only this session (repeat for several)')
    parser.add_argument('--out-dir', help='output folder (default WORK_DIR/visuals)')
    parser.add_argument('--mesh-format', choices=('obj', 'ply'), default='obj')
    parser.add_argument('--fps', type=float, default=25.0, help='video frame rate')
    parser.add_argument('--no-images', action='store_true',
                        help='grey backgrounds instead of the dataset images')
    parser.add_argument('--error-scale', type=float, default=10.0, metavar='PX',
                        help='keypoint error (pixels) at the red end of the colour scale')
    parser.add_argument('--dataset', help='the fitted dataset, if its recorded path moved')
    parser.add_argument('--config', help="the fit's config, if WORK_DIR has no "
                                         'chunks/config.json')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    wait_passively_if_threaded(args.threads)   # (before the first torch import)
    import torch

    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.visualization import export_fit_visuals

    if args.threads < 1:
        print('visualize: error: --threads must be >= 1', file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    chosen = args.video or args.meshes or args.animation or args.plots
    start = time.perf_counter()
    try:
        written = export_fit_visuals(
            args.work_dir, out_dir=args.out_dir, video=args.video or not chosen,
            meshes=args.meshes, animation=args.animation or not chosen,
            plots=args.plots or not chosen, sessions=args.session, frames=args.frames,
            mesh_format=args.mesh_format, fps=args.fps, images=not args.no_images,
            error_scale_px=args.error_scale, dataset=args.dataset, config=args.config,
            progress=not args.no_progress)
    except USER_ERRORS as err:
        print(f'visualize: error: {err}', file=sys.stderr)
        return 1
    for kind, paths in written.items():
        if paths:
            folders = sorted({str(p.parent) for p in paths})
            print(f'{kind}: {len(paths)} file(s) in {", ".join(folders)}')
    print(f'done in {time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
