"""Learn a body model's shape space from registered meshes in correspondence.

Run ``python tools/build_model.py --help`` for the input layout.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import prog_name
from .errors import USER_ERRORS

DESCRIPTION = __doc__.splitlines()[0]

EPILOG = """\
registrations: one of
  an .npz or .h5/.hdf5 file with 'vertices' (N, V, 3) (the template's topology) and,
      for posed registrations, the fitted parameters (N, ...) under the SMILModel
      names: global_orient, body_pose, betas, transl, log_scale, bone_trans,
      scale_weights, trans_weights. Posed meshes are unposed by inverse LBS with them;
  mesh files (.obj, .ply, .stl, ...) or directories of them (sorted by name), each
      a rest-pose mesh with the template's vertex order (--params adds fitted
      parameters from an .npz with one row per file, in the same order).
The learned model keeps the template's topology, skinning weights, skeleton and
keypoints, and replaces the mean template, shapedirs, scaledirs/transdirs, shape prior
and joint regressor. It is written atomically (.json, .json.gz or .pkl). With
--holdout F a fraction F of the registrations is kept out of learning and the errors
on it are reported beside the training errors.
"""

PARAM_KEYS = ('global_orient', 'body_pose', 'betas', 'transl', 'log_scale', 'bone_trans',
              'scale_weights', 'trans_weights')
MESH_SUFFIXES = ('.obj', '.ply', '.stl', '.off', '.glb', '.gltf')


class BuildModelError(ValueError):
    """The inputs cannot be used; the message says why."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name('build_model'), description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('template', help='model the registrations were made with (.json/.pkl)')
    p.add_argument('registrations', nargs='+',
                   help='.npz/.h5 file, or mesh files / directories (see below)')
    p.add_argument('-o', '--output', required=True, help='model file to write')
    p.add_argument('--params', help='.npz of fitted parameters for mesh-file inputs')
    p.add_argument('--scale-mode', default='entangled', choices=('entangled', 'separate',
                                                                 'mesh'),
                   help='how per-joint scale/translation are learned (entangled)')
    p.add_argument('--explained-variance', type=float, default=0.99,
                   help='fraction of variance the components must explain (0.99)')
    p.add_argument('--num-components', type=int, help='fixed number of shape components')
    p.add_argument('--max-components', type=int, help='cap on the number of components')
    p.add_argument('--normalize', default='std', choices=('std', 'unit'),
                   help='shape directions scaled by their std (std) or unit norm (unit)')
    p.add_argument('--propagate-scaling', action='store_true',
                   help='the fits used propagate_scaling=True')
    p.add_argument('--no-refit-regressor', action='store_true',
                   help='keep the template\'s joint regressor')
    p.add_argument('--holdout', type=float, default=0.0,
                   help='fraction of registrations held out for evaluation (0)')
    p.add_argument('--seed', type=int, default=0, help='seed of the hold-out split (0)')
    p.add_argument('--name', help='name of the learned model')
    p.add_argument('--report', help='also write the report as JSON to this path')
    p.add_argument('--overwrite', action='store_true', help='replace an existing output')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    return p


def _read_arrays(path: Path) -> Dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    if suffix == '.npz':
        with np.load(path, allow_pickle=False) as f:
            return {k: np.asarray(f[k]) for k in f.files}
    if suffix in ('.h5', '.hdf5'):
        from smilfit.datasets.hdf5.files import read_h5
        with read_h5(path, 'registrations') as f:
            return {k: np.asarray(f[k]) for k in f.keys() if hasattr(f[k], 'shape')}
    raise BuildModelError(f'{path}: expected .npz, .h5 or .hdf5')


def read_registrations(inputs: Sequence[str], params_path: Optional[str] = None,
                       progress: bool = False
                       ) -> Tuple[np.ndarray, Dict[str, np.ndarray], List[str]]:
    """Inputs -> ``(vertices (N, V, 3), params {name: (N, ...)}, labels)``."""
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f'registrations not found: {p}')
    if len(paths) == 1 and paths[0].suffix.lower() in ('.npz', '.h5', '.hdf5'):
        arrays = _read_arrays(paths[0])
        if 'vertices' not in arrays:
            raise BuildModelError(f'{paths[0]}: no "vertices" array (found '
                                  f'{sorted(arrays)})')
        verts = arrays['vertices']
        params = {k: arrays[k] for k in PARAM_KEYS if k in arrays}
        labels = [f'{paths[0].stem}[{i}]' for i in range(verts.shape[0])]
    else:
        files: List[Path] = []
        for p in paths:
            if p.is_dir():
                files.extend(sorted(f for f in p.iterdir()
                                    if f.suffix.lower() in MESH_SUFFIXES))
            else:
                files.append(p)
        if not files:
            raise BuildModelError(f'no mesh files among {inputs}')
        # Imported only when this branch runs (a heavy or optional part).
        from smilfit.registration import load_scans
        scans = load_scans(files, progress=progress)
        counts = {s.num_points for s in scans}
        if len(counts) != 1:
            raise BuildModelError('meshes are not in correspondence: vertex counts '
                                  f'{sorted(counts)}')
        verts = np.stack([s.points for s in scans])
        labels = [str(f) for f in files]
        params = {}
    if params_path is not None:
        arrays = _read_arrays(Path(params_path))
        params.update({k: arrays[k] for k in PARAM_KEYS if k in arrays})
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise BuildModelError(f'vertices must be (N, V, 3), got {verts.shape}')
    for k, v in params.items():
        if v.shape[0] != verts.shape[0]:
            raise BuildModelError(f'parameter {k!r} has {v.shape[0]} rows for '
                                  f'{verts.shape[0]} registrations')
    return verts.astype(np.float64), {k: v.astype(np.float64) for k, v in params.items()}, \
        labels


def build(args: argparse.Namespace) -> Dict:
    """Run the whole pipeline; returns the report."""
    import torch

    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.body_models import SMILModel
    from smilfit.body_models.io import load_model_data, model_file_kind, save_model_data
    from smilfit.model_learning import (ShapeSpaceLearner, effective_scale_trans,
                                        unpose_registrations)

    out = Path(args.output)
    model_file_kind(out)
    if out.exists() and not args.overwrite:
        raise BuildModelError(f'{out} exists (use --overwrite)')
    if not 0.0 <= args.holdout < 1.0:
        raise BuildModelError(f'--holdout must be in [0, 1), got {args.holdout}')
    template = load_model_data(args.template)
    verts, params, labels = read_registrations(args.registrations, args.params,
                                               not args.no_progress)
    if verts.shape[1] != template.num_vertices:
        raise BuildModelError(f'registrations have {verts.shape[1]} vertices, the template '
                              f'{template.num_vertices}')
    model = SMILModel(data=template, dtype=torch.float64,
                      propagate_scaling=args.propagate_scaling)
    tparams = {k: torch.as_tensor(v) for k, v in params.items()}
    log_scale = bone_trans = joints = None
    if tparams:
        rest, joints_t = unpose_registrations(model, torch.as_tensor(verts), tparams,
                                              progress=not args.no_progress)
        rest, joints = rest.numpy(), joints_t.numpy()
        ls, bt = effective_scale_trans(model, tparams)
        log_scale = None if ls is None else ls.numpy()
        bone_trans = None if bt is None else bt.numpy()
    else:
        rest = verts
    N = rest.shape[0]
    order = np.random.default_rng(args.seed).permutation(N)
    n_hold = int(round(args.holdout * N))
    hold, train = np.sort(order[:n_hold]), np.sort(order[n_hold:])
    pick = lambda a, idx: None if a is None else a[idx]  # noqa: E731
    learner = ShapeSpaceLearner(
        template, scale_mode=args.scale_mode, num_components=args.num_components,
        explained_variance=args.explained_variance, max_components=args.max_components,
        normalize=args.normalize, propagate_scaling=args.propagate_scaling,
        refit_regressor=not args.no_refit_regressor, name=args.name)
    space = learner.fit(rest[train], pick(joints, train), pick(log_scale, train),
                        pick(bone_trans, train))
    report = dict(template=str(args.template), output=str(out), registrations=int(N),
                  train=int(train.size), holdout=int(hold.size),
                  num_components=space.num_components,
                  explained_variance=space.report['explained_variance'],
                  component_variance_ratio=[float(r) for r in space.pca.explained_ratio],
                  train_errors=space.report['train'],
                  units=template.units)
    if hold.size:
        samples = learner.prepare(rest[hold], pick(joints, hold), pick(log_scale, hold),
                                  pick(bone_trans, hold))
        report['holdout_errors'] = learner.errors(samples)
        report['holdout_labels'] = [labels[i] for i in hold]
    save_model_data(space.data, out)
    if args.report:
        # Imported only when this branch runs (a heavy or optional part).
        from smilfit.body_models.io import write_bytes_atomic
        write_bytes_atomic(args.report, json.dumps(report, indent=2).encode('utf-8'))
    return report


def _print_report(report: Dict) -> None:
    u = '' if report['units'] == 'unknown' else f' {report["units"]}'
    print(f'learned {report["num_components"]} components explaining '
          f'{100 * report["explained_variance"]:.2f} % of the variance from '
          f'{report["train"]} registrations -> {report["output"]}')
    for key in ('train_errors', 'holdout_errors'):
        if key in report:
            e = report[key]
            print(f'{key.split("_")[0]:>8}: per-vertex error mean {e["mean"]:.4g}{u} '
                  f'(max {e["max"]:.4g}); template alone mean {e["template_mean"]:.4g}{u} '
                  f'(max {e["template_max"]:.4g})')


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    import torch
    torch.set_num_threads(1)
    try:
        report = build(args)
    except (BuildModelError, *USER_ERRORS) as err:
        print(f'build_model: error: {err}', file=sys.stderr)
        return 2
    _print_report(report)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
