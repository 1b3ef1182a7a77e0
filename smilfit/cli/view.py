"""``tools/view.py WORK_DIR``: look at a fit in 3D, in the browser.

WORK_DIR is the output folder of tools/fit.py (fit_results.h5), tools/infer.py
(predictions.h5: meshes posed from the predicted parameters) or tools/register.py
(registrations.npz). The viewer (viser) serves its
page itself, at http://HOST:PORT (nothing is fetched from the internet):

  timeline     frame slider, play / fps, previous / next
  layers       mesh (one per animal), fitted keypoints (dots) and observed keypoints
               (diamonds, triangulated from the 2D observations) coloured by error
               (green 0 -> red at --error-scale; the fit's median reprojection error
               over the views, pixels), error lines between them, the cameras as
               frusta, each view's image on its frustum, scan points (registrations)
  view         look through any dataset camera (the first one at the start), or free;
               it opens framed on the first frame's animal (--no-frame: the camera's
               own field of view, exactly as it saw the scene)

With --export the same scene is written to a file instead, and no server starts:
  scene.html   one self-contained page (the viewer with the recording and its play /
               scrub bar embedded; opens offline, can be e-mailed)
  scene.glb    glTF binary for Blender & co.: a node per frame (meshes, keypoint
               spheres coloured by error) and the cameras with their images; a .glb
               has no timeline, so pick frames with --frames

Examples:
  python tools/view.py work_dirs/demo_mouse
  python tools/view.py work_dirs/demo_mouse --session synthetic_0001 --frames 0:8
  python tools/view.py work_dirs/demo_mouse --export demo.html
  python tools/view.py work_dirs/demo_mouse --frames 3 --export frame3.glb
Needs the viewer extra: pip install -e ".[viewer]" (viser).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

from . import prog_name
from .errors import USER_ERRORS, report_error
from .threads import wait_passively_if_threaded
from .visualize import parse_frames

#: The layers (smilfit.visualization.viewer.LAYERS, restated: this module must not
#: import torch before argparse has run).
LAYERS = ('mesh', 'fitted keypoints', 'observed keypoints', 'error lines', 'cameras',
          'images', 'scan points')
EXPORT_SUFFIXES = ('.html', '.glb')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog_name('view'), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('work_dir', help='output folder of tools/fit.py, tools/infer.py or '
                                         'tools/register.py')
    parser.add_argument('--session', metavar='NAME_OR_INDEX',
                        help='the session on the timeline (default: the first fitted one)')
    parser.add_argument('--frames', type=parse_frames, metavar='A:B',
                        help="frame numbers A <= frame < B ('A' alone: that frame)")
    parser.add_argument('--dataset', help='the fitted dataset, if its recorded path moved')
    parser.add_argument('--host', default='127.0.0.1',
                        help="address to serve on (default 127.0.0.1: this machine only; "
                             "'0.0.0.0' for others on the network)")
    parser.add_argument('--port', type=int, default=8080, help='port (default 8080)')
    parser.add_argument('--camera', default='0', metavar='NAME_OR_INDEX',
                        help="look through this camera at the start, or 'free' (default 0)")
    parser.add_argument('--no-frame', dest='frame_animal', action='store_false',
                        help="start with the camera's own field of view instead of framing "
                             "the first frame's animal (from the camera's position)")
    parser.add_argument('--hide', action='append', default=[], choices=LAYERS,
                        metavar='LAYER', help=f'start with a layer off (repeat); one of: '
                                              f'{", ".join(LAYERS)}')
    parser.add_argument('--error-scale', type=float, metavar='E',
                        help='error at the red end of the colours (default: the 95th '
                             "percentile of the scene's errors)")
    parser.add_argument('--fps', type=float, default=10.0, help='playback speed')
    parser.add_argument('--no-images', action='store_true',
                        help="don't read the views' images (faster, smaller exports)")
    parser.add_argument('--export', metavar='FILE',
                        help='write the scene to FILE (.html or .glb) instead of serving it')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    return parser


def _camera_index(text: str, names: Optional[List[str]]) -> Optional[int]:
    if text == 'free' or not names:
        return None
    if text in names:
        return names.index(text)
    if text.isdigit() and int(text) < len(names):
        return int(text)
    raise ValueError(f"--camera {text!r}: not 'free' nor one of the cameras {names} "
                     f'(or 0..{len(names) - 1})')


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    wait_passively_if_threaded(args.threads)   # (before the first torch import)
    tool = prog_name('view')
    if args.export and Path(args.export).suffix.lower() not in EXPORT_SUFFIXES:
        print(f'{tool}: error: --export {args.export}: the file must end in '
              f'{" or ".join(EXPORT_SUFFIXES)}', file=sys.stderr)
        return 1
    if args.threads < 1 or args.fps <= 0:
        print(f'{tool}: error: --threads must be >= 1 and --fps > 0', file=sys.stderr)
        return 1
    import torch

    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.visualization.scene import load_scene
    torch.set_num_threads(args.threads)
    layers = [name for name in LAYERS if name not in args.hide]
    try:
        scene = load_scene(args.work_dir, session=args.session, frames=args.frames,
                           dataset=args.dataset, images=not args.no_images)
        view = _camera_index(args.camera, None if scene.cameras is None
                             else scene.cameras.names)
        if args.export:
            return _export(scene, Path(args.export), args, layers, view)
        # Imported only when this branch runs (a heavy or optional part).
        from smilfit.visualization.viewer import SceneViewer, require_viser
        viser = require_viser()
        server = viser.ViserServer(host=args.host, port=args.port, verbose=False)
    except ImportError as err:
        print(f'{tool}: error: {err}', file=sys.stderr)
        return 1
    except (*USER_ERRORS, OSError) as err:
        return report_error(tool, err)
    viewer = SceneViewer(scene, server, error_scale=args.error_scale, layers=layers,
                         view_camera=view, frame_animal=args.frame_animal, fps=args.fps)
    print(f'{scene.title}: {scene.num_frames} frame(s), {scene.num_animals} animal(s); '
          f'open http://{args.host}:{server.get_port()} (Ctrl-C to stop)', flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        viewer.close()
        server.stop()
    return 0


def _export(scene, path: Path, args, layers: List[str], view: Optional[int]) -> int:
    start = time.perf_counter()
    if path.suffix.lower() == '.glb':
        # Imported only when this branch runs (a heavy or optional part).
        from smilfit.visualization.scene_export import export_glb
        export_glb(scene, path, error_scale=args.error_scale, images='images' in layers)
    else:
        # Imported only when this branch runs (a heavy or optional part).
        from smilfit.visualization.viewer import export_html
        export_html(scene, path, fps=args.fps, error_scale=args.error_scale, layers=layers,
                    view_camera=view, frame_animal=args.frame_animal)
    size = path.stat().st_size / 1e6
    print(f'{path}: {scene.num_frames} frame(s), {size:.1f} MB, in '
          f'{time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
