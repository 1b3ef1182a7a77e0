"""Soft-silhouette rendering speed and memory: forward, forward+backward, peak memory.

For each mesh (the stick insect and the mouse from ../shared, the embedded demo mouse
when ../shared is absent, and a 3000-face sphere) and each resolution, one camera looks
at the mesh along its thinnest axis with the mesh spanning 80 % of the image, and
``SoftSilhouetteRenderer`` renders one silhouette. ``sigma`` is given in pytorch3d's
squared-NDC units (default 1e-4, pytorch3d's default) and converted to squared pixels
per resolution, so the blur is the same fraction of the image at every size.

Columns: median milliseconds of a forward pass (no autograd) and of forward + backward
(of the sum of the silhouette), the number of (face, pixel) pairs evaluated (the work),
and the peak memory of one forward + backward above what was allocated before it: on CPU
the growth of the process's peak resident set (Linux ``VmHWM``, reset through
``/proc/self/clear_refs`` before the call; the script re-runs itself with
``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors leave the resident set), on CUDA
``torch.cuda.max_memory_allocated``. With
``--pytorch3d`` (where installed) pytorch3d's rasterizer is timed through
``PyTorch3DSilhouetteRenderer`` on the same scenes.

The bar: forward + backward of the 6000-face stick insect at 256 x 256
on one CPU thread at least 10x faster than pytorch3d's CPU soft silhouette (about 2 s
forward and 36-55 s backward there), i.e. well under 4 s.

Usage::

    python benchmarks/render.py                       # CPU, one thread, 128/256/512 px
    python benchmarks/render.py --device cuda
    python benchmarks/render.py --models stick --sizes 256 --pytorch3d
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import SHARED  # noqa: E402  (benchmarks/shared_data.py)

import timing  # noqa: E402  (benchmarks/timing.py, beside this script)
from smilfit.body_models import SMILModel, demo_model_data, load_model_data  # noqa: E402
from smilfit.renderers import (PyTorch3DSilhouetteRenderer, SoftSilhouetteRenderer,  # noqa: E402
                               cutoff_margin, pytorch3d_available)
from smilfit.renderers.screen import screen_vertices  # noqa: E402
from smilfit.renderers.soft_rasterizer import face_boxes  # noqa: E402

SHARED_MODELS = SHARED / 'models'
MODEL_FILES = {'stick': 'SMILy_STICK.pkl', 'mouse': 'SMILy_Mouse_static_joints.pkl'}


def uv_sphere(n_lat: int = 26, n_lon: int = 60) -> Tuple[torch.Tensor, torch.Tensor]:
    """A closed unit UV sphere; the defaults give 3000 faces."""
    theta = torch.arange(1, n_lat, dtype=torch.float64) * math.pi / n_lat
    phi = torch.arange(n_lon, dtype=torch.float64) * 2 * math.pi / n_lon
    ring = torch.stack([theta.sin()[:, None] * phi.cos(), theta.sin()[:, None] * phi.sin(),
                        theta.cos()[:, None].expand(-1, n_lon)], -1).reshape(-1, 3)
    verts = torch.cat([ring.new_tensor([[0, 0, 1.0]]), ring, ring.new_tensor([[0, 0, -1.0]])])
    j = torch.arange(n_lon)
    jn = (j + 1) % n_lon
    faces = [torch.stack([torch.zeros_like(j), 1 + j, 1 + jn], -1)]
    for i in range(n_lat - 2):
        a, b = 1 + i * n_lon + j, 1 + i * n_lon + jn
        faces += [torch.stack([a, a + n_lon, b], -1), torch.stack([b, a + n_lon, b + n_lon], -1)]
    last = verts.shape[0] - 1
    base = 1 + (n_lat - 2) * n_lon
    faces.append(torch.stack([base + j, torch.full_like(j, last), base + jn], -1))
    return verts.float(), torch.cat(faces)


def load_mesh(name: str) -> Tuple[str, torch.Tensor, torch.Tensor]:
    """(label, (V, 3) rest vertices, (F, 3) faces)."""
    if name == 'sphere3k':
        verts, faces = uv_sphere()
        return name, verts, faces
    if name in MODEL_FILES and (SHARED_MODELS / MODEL_FILES[name]).exists():
        model = SMILModel(data=load_model_data(SHARED_MODELS / MODEL_FILES[name]))
        label = name
    else:
        if name != 'demo':
            print(f'({name}: ../shared/models not found, using the demo mouse)')
        model = SMILModel(data=demo_model_data())
        label = 'demo'
    with torch.no_grad():
        verts = model().vertices[0]
    return label, verts, model.faces


def camera_for(verts: torch.Tensor, size: int, device) -> Dict[str, object]:
    """One pinhole camera along the mesh's thinnest axis, the mesh spanning 80 %."""
    verts = verts.detach().cpu()
    centre = (verts.amax(0) + verts.amin(0)) / 2
    extent = verts.amax(0) - verts.amin(0)
    axis = int(extent.argmin())
    others = [i for i in range(3) if i != axis]
    # Rows of R: image x, image y, viewing direction (a right-handed permutation).
    R = torch.zeros(3, 3)
    R[0, others[0]], R[1, others[1]], R[2, axis] = 1.0, 1.0, 1.0
    if torch.det(R) < 0:
        R[1] = -R[1]
    distance = 3.0 * float(extent.max())
    t = -(R @ centre) + torch.tensor([0.0, 0.0, distance])
    f = 0.8 * size * distance / float(extent.max())
    K = torch.tensor([[f, 0.0, (size - 1) / 2], [0.0, f, (size - 1) / 2], [0.0, 0.0, 1.0]])
    return dict(K=K[None, None].to(device), R=R[None, None].to(device),
                t=t[None, None].to(device), dist=None, height=size, width=size)


def pair_count(verts, faces, cams, sigma_px: float, cutoff: float) -> int:
    screen = screen_vertices(verts[None], cams)
    tri = screen.points[0, 0][faces]
    boxes = face_boxes(tri, torch.ones(len(faces), dtype=torch.bool, device=tri.device),
                       screen.height, screen.width, cutoff_margin(sigma_px, cutoff))
    return int((boxes.width * boxes.height).sum())


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Median milliseconds per call: rendering steps are long, so fewer, longer runs."""
    return timing.time_call(fn, device, min_time=1.0, min_reps=3, warmup=1, max_reps=50)


def _status_kib(field: str) -> Optional[int]:
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith(field + ':'):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> Optional[float]:
    """Peak memory of one call of ``fn`` above the memory in use before it (MiB)."""
    if device.type == 'cuda':
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2 ** 20
    try:  # reset the peak resident set size (VmHWM) to the current one (Linux >= 4.0)
        Path('/proc/self/clear_refs').write_text('5')
    except OSError:
        return None
    before = _status_kib('VmRSS')
    fn()
    peak = _status_kib('VmHWM')
    return None if before is None or peak is None else (peak - before) / 1024


def _unmap_freed_memory() -> None:
    """Re-run this script with glibc returning every large freed block to the system.

    glibc raises its mmap threshold after big frees, after which freed tensors stay in
    the resident set and hide the next call's peak; a fixed threshold (set before the
    process starts) keeps the resident set an honest measure of live memory.
    """
    if os.environ.get('MALLOC_MMAP_THRESHOLD_') is None and sys.platform.startswith('linux'):
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:],
                  env)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=['stick', 'mouse', 'sphere3k'],
                        choices=['stick', 'mouse', 'demo', 'sphere3k'])
    parser.add_argument('--sizes', nargs='+', type=int, default=[128, 256, 512])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--sigma-ndc', type=float, default=1e-4,
                        help='sharpness in squared NDC units (pytorch3d convention)')
    parser.add_argument('--cutoff', type=float, default=1e-4)
    parser.add_argument('--max-pairs', type=int, default=None,
                        help="pairs per chunk (default: the renderer's for the device, "
                             '2^16 on CPU, 2^20 on CUDA)')
    parser.add_argument('--pytorch3d', action='store_true',
                        help="also time pytorch3d's rasterizer (where installed)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device available')
    if args.pytorch3d and not pytorch3d_available():
        raise SystemExit('--pytorch3d: pytorch3d is not installed')
    pairs = SoftSilhouetteRenderer(max_pairs=args.max_pairs).pairs_per_chunk(device)
    print(f'\n## Soft silhouettes, {device.type}, {torch.get_num_threads()} thread(s), '
          f'sigma = {args.sigma_ndc:g} NDC^2, cutoff = {args.cutoff:g}, '
          f'max_pairs = {pairs}\n')
    print('| mesh | faces | size | renderer | pairs | fwd ms | fwd+bwd ms | peak MiB |')
    print('|---|---|---|---|---|---|---|---|')
    for name in args.models:
        label, verts, faces = load_mesh(name)
        verts, faces = verts.to(device), faces.to(device)
        for size in args.sizes:
            sigma_px = args.sigma_ndc * (size / 2) ** 2
            cams = camera_for(verts, size, device)
            renderers = [('smilfit', SoftSilhouetteRenderer(
                sigma=sigma_px, cutoff=args.cutoff, max_pairs=args.max_pairs))]
            if args.pytorch3d:
                renderers.append(('pytorch3d', PyTorch3DSilhouetteRenderer(
                    sigma=sigma_px, cutoff=args.cutoff)))
            pairs = pair_count(verts, faces, cams, sigma_px, args.cutoff)
            for rname, renderer in renderers:
                def forward():
                    with torch.no_grad():
                        return renderer(verts[None], faces, cams)

                def forward_backward():
                    v = verts[None].clone().requires_grad_(True)
                    renderer(v, faces, cams).sum().backward()
                    return v.grad

                fwd = time_call(forward, device)
                both = time_call(forward_backward, device)
                peak = peak_memory_mib(forward_backward, device)
                peak_s = 'n/a' if peak is None else f'{peak:.0f}'
                print(f'| {label} | {faces.shape[0]} | {size} | {rname} | {pairs} | {fwd:.0f} '
                      f'| {both:.0f} | {peak_s} |', flush=True)
    return 0


if __name__ == '__main__':
    _unmap_freed_memory()
    raise SystemExit(main())
