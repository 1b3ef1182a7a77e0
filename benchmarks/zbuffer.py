"""Z-buffer rasteriser speed: the demo mouse rendered by ``rasterize`` and ``render_mesh``.

The z-buffer (``smilfit.renderers.zbuffer``) draws every synthetic label's visibility and
every mesh overlay of the figures and videos. For each image size the demo mouse (6,560
faces, rest pose) is seen as ``benchmarks/render.py`` sees it (along its thinnest axis,
spanning 80 % of the image); the table
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import timing  # noqa: E402  (benchmarks/timing.py, beside this script)
from render import camera_for, load_mesh  # noqa: E402  (the soft renderer's scene)
from tables import emit  # noqa: E402  (benchmarks/tables.py)


def scene(size: int, mesh=None):
    """The demo mouse's rest-pose vertices (V, 3) float64, its faces (F, 3) and the
    camera ``(K, R, t)`` of an image ``size`` pixels square (``mesh``: the ``(vertices,
    faces)`` of an earlier call, to skip building the model again)."""
    verts, faces = mesh if mesh is not None else load_mesh('demo')[1:]
    cam = camera_for(verts, size, torch.device('cpu'))
    return (verts.double(), faces) + tuple(cam[k][0, 0].double() for k in ('K', 'R', 't'))


def rows(sizes: Sequence[int]) -> List[list]:
    """One row per image size: size, faces, covered pixels, median ms of ``rasterize`` and
    of ``render_mesh``."""
    from smilfit.renderers.zbuffer import rasterize
    from smilfit.visualization.zbuffer import render_mesh
    out = []
    device = torch.device('cpu')
    mesh = load_mesh('demo')[1:]
    for size in sizes:
        verts, faces, K, R, t = scene(size, mesh)
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
