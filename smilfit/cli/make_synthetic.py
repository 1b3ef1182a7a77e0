"""Render a synthetic multi-view dataset from a body model into smilfit's HDF5 format.

Run ``python tools/make_synthetic_dataset.py --help`` for the options.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from . import prog_name
from .errors import SmilfitUserError

DESCRIPTION = __doc__.splitlines()[0]

EPILOG = """\
One session per animal (shape, colour and camera rig), several frames (poses) per session,
so session-level train/val/test splits work as on real data. Every file holds images
(JPEG), silhouette masks (PNG), 2D keypoints with occlusion-aware visibility, 3D
keypoints, cameras (OpenCV convention) and the ground-truth body parameters.
Lengths are in the body model's units (the demo mouse: mm). Deterministic given --seed.

examples:
  python tools/make_synthetic_dataset.py data/synthetic/synthetic_multiview.h5
  python tools/make_synthetic_dataset.py out.h5 --model my_animal.json --sessions 20 \\
      --frames 50 --views 6 --image-size 320 256 --elevation 10 60
  python tools/make_synthetic_dataset.py video.h5 --frames 64 --pose-correlation 0.98
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name('make_synthetic_dataset'), description=DESCRIPTION,
                                epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('output', help='HDF5 file to write (.h5)')
    p.add_argument('--model', help='body model file (.json / .pkl); default: the embedded '
                                   'demo mouse')
    p.add_argument('--sessions', type=int, default=4, help='animals / sessions (4)')
    p.add_argument('--frames', type=int, default=8, help='frames (poses) per session (8)')
    p.add_argument('--views', type=int, default=4, help='cameras per session (4)')
    p.add_argument('--image-size', type=int, nargs='+', default=[256], metavar='N',
                   help='image size: one value (square) or W H (256)')
    cam = p.add_mutually_exclusive_group()
    cam.add_argument('--focal', type=float, help='focal length in pixels')
    cam.add_argument('--fov', type=float, default=40.0,
                     help='horizontal field of view in degrees (40)')
    p.add_argument('--distance', type=float,
                   help='camera distance in model units (default: from --fill)')
    p.add_argument('--fill', type=float, default=0.6,
                   help='fraction of the image the body length spans (0.6)')
    p.add_argument('--elevation', type=float, nargs='+', default=[15.0, 45.0],
                   metavar='DEG', help='camera elevation in degrees, or a MIN MAX range (15 45)')
    p.add_argument('--azimuth-jitter', type=float, default=10.0,
                   help='random azimuth jitter of each camera on the ring, degrees (10)')
    p.add_argument('--pose-std', type=float, default=0.3,
                   help='std of every joint axis-angle component, radians (0.3)')
    p.add_argument('--pose-correlation', type=float, default=0.0, metavar='RHO',
                   help='each session a video: consecutive poses correlated by RHO in '
                        '[0, 1), e.g. 0.98 (0: every frame posed anew)')
    p.add_argument('--tilt-std', type=float, default=0.1,
                   help='std of the body tilt away from upright, radians (0.1)')
    p.add_argument('--transl-std', type=float, default=0.1,
                   help='std of the ground-plane position, body lengths (0.1)')
    p.add_argument('--shape-std-scale', type=float, default=1.0,
                   help='scale of the shape prior covariance (1.0)')
    p.add_argument('--log-scale-std', type=float, default=0.0,
                   help='std of per-joint log scales per animal (0: off)')
    p.add_argument('--occlusion-tol', type=float,
                   help='depth tolerance of keypoint visibility, model units '
                        '(default 10%% of the body length)')
    p.add_argument('--jpeg-quality', type=int, default=92, help='JPEG quality (92)')
    p.add_argument('--no-masks', action='store_true', help='do not store silhouettes')
    p.add_argument('--seed', type=int, default=0, help='random seed (0)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing output')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the process exit status."""
    args = _parser().parse_args(argv)
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        print(f'error: {output} exists; pass --overwrite to replace it', file=sys.stderr)
        return 1
    if len(args.image_size) not in (1, 2) or len(args.elevation) not in (1, 2):
        print('error: --image-size and --elevation take one or two values', file=sys.stderr)
        return 2
    size = args.image_size * 2 if len(args.image_size) == 1 else args.image_size
    options: Dict[str, Any] = dict(
        num_sessions=args.sessions, frames_per_session=args.frames, num_views=args.views,
        image_size=tuple(size), focal=args.focal, fov_deg=args.fov, distance=args.distance,
        fill=args.fill, elevation_deg=tuple(args.elevation) if len(args.elevation) == 2
        else args.elevation[0], azimuth_jitter_deg=args.azimuth_jitter,
        pose_std=args.pose_std, pose_correlation=args.pose_correlation,
        tilt_std=args.tilt_std, transl_std=args.transl_std,
        shape_std_scale=args.shape_std_scale, log_scale_std=args.log_scale_std,
        occlusion_tol=args.occlusion_tol, jpeg_quality=args.jpeg_quality,
        masks=not args.no_masks, seed=args.seed)
    # Imported on use: --help and argument errors must not load torch or mmengine.
    from ..datasets.synthetic import generate_synthetic_dataset
    start = time.perf_counter()
    try:
        path = generate_synthetic_dataset(output, body_model=args.model,
                                          overwrite=args.overwrite, progress=not args.quiet,
                                          **options)
    except (SmilfitUserError, ValueError, OSError) as err:  # refused model pickles too
        print(f'error: {err}', file=sys.stderr)
        return 1
    n = args.sessions * args.frames
    print(f'wrote {path}: {args.sessions} sessions x {args.frames} frames x {args.views} '
          f'views ({n} samples, {size[0]}x{size[1]} px) in {time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
