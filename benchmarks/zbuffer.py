"""Z-buffer rasteriser speed: the demo mouse rendered by ``rasterize`` and ``render_mesh``.

The z-buffer (``smilfit.renderers.zbuffer``) draws every synthetic label's visibility and
every mesh overlay of the figures and videos. For each image size the demo mouse (6,560
faces, rest pose) is seen from above and behind, filling much of the image; the table
gives the covered pixels and the median milliseconds of a call of ``rasterize`` (face
index, depth and barycentrics per pixel) and of ``render_mesh`` (the same, shaded), on
the number of threads asked for (default one, as a figure or a video is drawn beside a
fit on a shared machine).

Usage::

    python benchmarks/zbuffer.py                     # 256 and 512 px, one thread
    python benchmarks/zbuffer.py --sizes 1024 --threads 2
    python benchmarks/zbuffer.py --tables docs/tables
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import timing  # noqa: E402  (benchmarks/timing.py, beside this script)
from tables import emit  # noqa: E402  (benchmarks/tables.py)

#: Where the camera sits, from the mesh's centre, in units of its largest extent: above and
#: behind the mouse, so the body and the tail cover much of the image.
VIEW_OFFSET = (0.0, -0.9, 0.5)
#: Focal length in units of the image size.
FOCAL_PER_PX = 600.0 / 512.0


def scene(size: int):
    """The demo mouse's rest-pose vertices (V, 3) float64, its faces (F, 3) and the
    camera ``(K, R, t)`` of an image ``size`` pixels square."""
    from smilfit.body_models import SMILModel, demo_model_data
    from smilfit.datasets.synthetic import look_at
    model = SMILModel(data=demo_model_data())
    with torch.no_grad():
        verts = model().vertices[0].double()
    centre = verts.mean(0).numpy()
    extent = float((verts.max(0).values - verts.min(0).values).max())
    R, t = look_at(centre + np.array(VIEW_OFFSET) * extent, centre, np.array([0, 0, 1.0]))
    f = FOCAL_PER_PX * size
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    return verts, model.faces, K, R, t


def rows(sizes: Sequence[int]) -> List[list]:
    """One row per image size: size, faces, covered pixels, median ms of ``rasterize`` and
    of ``render_mesh``."""
    from smilfit.renderers.zbuffer import rasterize
    from smilfit.visualization.zbuffer import render_mesh
    out = []
    device = torch.device('cpu')
    for size in sizes:
        verts, faces, K, R, t = scene(size)
        covered = int(rasterize(verts, faces, K, R, t, height=size, width=size).mask.sum())
        ms = [timing.time_call(lambda fn=fn: fn(verts, faces, K, R, t, height=size, width=size),
                               device, min_time=0.5, min_reps=5, warmup=1)
              for fn in (rasterize, render_mesh)]
        out.append([f'{size} x {size}', len(faces), covered] + [f'{m:.1f}' for m in ms])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', nargs='+', type=int, default=[256, 512],
                        help='image sizes in pixels (square)')
    parser.add_argument('--threads', type=int, default=1, help='torch threads')
    parser.add_argument('--tables', default=None, metavar='DIR',
                        help='also write the table to DIR/zbuffer_cpu.md (docs/tables for '
                             'the docs)')
    args = parser.parse_args(argv)
    if any(size < 8 for size in args.sizes):
        parser.error(f'--sizes: every size must be at least 8 pixels, got {args.sizes}')
    if args.threads < 1:
        parser.error(f'--threads must be at least 1, got {args.threads}')
    torch.set_num_threads(args.threads)
    print(f'\n## The z-buffer on the demo mouse, CPU, {torch.get_num_threads()} thread(s)\n')
    emit('zbuffer_cpu', ['image', 'faces', 'covered px', 'rasterize ms', 'render_mesh ms'],
         rows(args.sizes), args.tables)
    return 0


if __name__ == '__main__':
    sys.exit(main())
