"""``tools/register.py CONFIG``: register a folder of 3D scans with a body model.

Scans (.obj, .ply, .stl, .off meshes or point clouds, read with trimesh) are resampled,
normalised (centre / scale / PCA or manual orientation), initialised from the PCA frames
of scan and template and fitted in the config's stages (e.g. rigid -> pose and shape ->
per-vertex offsets)::

    _base_ = ['../_base_/body_models/stick_insect.py', '../_base_/registration/surface_stages.py']
    registrant = dict(handlers=[dict(type='SurfaceHandler', name='scan', ...), ...])
    data = dict(scan_dir='my_scans', num_points=5000, batch_size=8)

Results go to --work-dir (default work_dirs/<config name>): registrations.npz (meshes
and parameters in the model frame, for tools/build_model.py; meshes in the scan frame),
meshes/<scan>.ply, errors.csv (per scan: mean / 95th-percentile / max scan-to-mesh
surface distance, mesh-to-scan distance) and summary.json. Finished batches are kept
in chunks/ so --resume continues an interrupted run.

Many scans over several processes (each rank registers every world-th batch, rank 0
merges):
    torchrun --nproc_per_node 4 tools/register.py CONFIG --launcher pytorch
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

from mmengine.config import DictAction

from . import prog_name
from .errors import USER_ERRORS
from .threads import wait_passively_if_threaded


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog_name('register'), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='registration config file (.py)')
    parser.add_argument('--work-dir', help='output directory (default work_dirs/<config>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        metavar='KEY=VALUE', help='override config entries, e.g. '
                        'data.scan_dir=my_scans data.num_points=5000')
    parser.add_argument('--resume', action='store_true', help='continue an interrupted run')
    parser.add_argument('--overwrite', action='store_true', help='replace existing results')
    parser.add_argument('--device', default='cpu', help="torch device (default 'cpu')")
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads per process (default 1; run several '
                             'processes with --launcher instead)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='none (one process) or a distributed launcher '
                        '(pytorch under torchrun): scans are sharded over the ranks')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    wait_passively_if_threaded(args.threads)   # (before the first torch import)
    import torch
    from mmengine.config import Config

    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.apis.registration import (SUMMARY_NAME, RegistrationConfigError,
                                           register_scans)
    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.registration import ScanError
    from smilfit.registrants.stages import StageConfigError
    from smilfit.utils import register_all_modules

    if args.threads < 1:
        print('register: error: --threads must be >= 1', file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        register_all_modules()
        cfg = Config.fromfile(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        work_dir = Path(args.work_dir or cfg.get('work_dir') or
                        Path('work_dirs') / Path(args.config).stem)
        results = register_scans(cfg, work_dir, resume=args.resume, overwrite=args.overwrite,
                                 progress=not args.no_progress, device=args.device,
                                 launcher=args.launcher)
    except (RegistrationConfigError, StageConfigError, ScanError, *USER_ERRORS) as err:
        print(f'register: error: {err}', file=sys.stderr)
        return 1
    from mmengine.dist import get_dist_info
    if get_dist_info()[0] == 0:
        summary = json.loads((results.parent / SUMMARY_NAME).read_text())
        errors = summary['errors']
        p = next((k for k in errors if k.startswith('scan_to_mesh_p')), None)
        line = (f'registered {summary["num_scans"]} scans ({summary["num_diverged"]} diverged)'
                f'; scan-to-mesh distance mean {errors["scan_to_mesh_mean"]["mean"]:.4g}')
        if p is not None:
            line += f', {p[len("scan_to_mesh_p"):]}th percentile {errors[p]["mean"]:.4g}'
        print(line)
        if 'ground_truth' in summary:
            print(f'per-vertex error against the true meshes: mean '
                  f'{summary["ground_truth"]["per_vertex_mean"]:.4g}')
        print(f'wrote {results} in {time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
