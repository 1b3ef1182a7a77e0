"""Learn a Gaussian-mixture pose prior (MaxMixturePosePrior) from fitted poses.

Run ``python tools/learn_pose_prior.py --help`` for the input layout.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import prog_name

DESCRIPTION = __doc__.splitlines()[0]

EPILOG = """\
input: an .npz or .h5/.hdf5 file holding fitted poses under --key (an HDF5 key may be
a path such as fits/body_pose). Layouts:
  (N, D)          one flattened pose per row
  (N, J-1, 3)     axis-angle body poses (the body model's body_pose)
  (..., J-1, 3)   any leading dimensions (frames, animals) are samples
Poses with NaN/inf values are dropped (and counted). The prior is fitted on the
flattened poses; the output .npz holds means (C, D), covariances (C, D, D),
weights (C,), pose_shape and metadata (JSON), and is written atomically. Use it as

  loss = dict(type='MaxMixturePosePrior', path='pose_prior.npz')
"""

INPUT_SUFFIXES = ('.npz', '.h5', '.hdf5')


class PriorInputError(ValueError):
    """The pose file cannot be used; the message says why."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name('learn_pose_prior'), description=DESCRIPTION,
                                epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('input', help='fitted poses (.npz, .h5 or .hdf5)')
    p.add_argument('-o', '--output', required=True, help='prior file to write (.npz)')
    p.add_argument('--key', default='body_pose',
                   help='array (npz) or dataset path (HDF5) holding the poses (body_pose)')
    p.add_argument('-n', '--n-components', type=int, default=8,
                   help='number of mixture components (8)')
    p.add_argument('--iters', type=int, default=100, help='maximum EM iterations (100)')
    p.add_argument('--reg', type=float, default=1e-4,
                   help='added to covariance diagonals, squared pose units (1e-4)')
    p.add_argument('--tol', type=float, default=1e-6,
                   help='stop when the mean log-likelihood improves by less (1e-6)')
    p.add_argument('--seed', type=int, default=0, help='initialisation seed (0)')
    p.add_argument('--max-samples', type=int,
                   help='fit on a random subset of at most this many poses')
    p.add_argument('--overwrite', action='store_true', help='replace an existing output')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    return p


def _h5_datasets(f) -> List[str]:
    names: List[str] = []

    def visit(name, obj):
        if hasattr(obj, 'shape') and hasattr(obj, 'dtype'):
            names.append(f'{name} {tuple(obj.shape)}')
    f.visititems(visit)
    return names


def read_poses(path: Path, key: str) -> np.ndarray:
    """The raw array under ``key`` in an ``.npz`` or HDF5 file.

    Raises:
        FileNotFoundError: no such file.
        PriorInputError: unknown format, missing key (the message lists the keys).
    """
    if not path.is_file():
        raise FileNotFoundError(f'input file not found: {path}')
    suffix = path.suffix.lower()
    if suffix == '.npz':
        with np.load(path, allow_pickle=False) as f:
            if key not in f.files:
                raise PriorInputError(f'{path.name}: no array {key!r}; arrays: '
                                      + ', '.join(f'{k} {f[k].shape}' for k in f.files))
            return np.asarray(f[key])
    if suffix in ('.h5', '.hdf5'):
        from smilfit.datasets.hdf5.files import read_h5
        with read_h5(path, 'pose samples') as f:
            obj = f.get(key)
            if obj is None or not hasattr(obj, 'shape'):
                what = 'is a group, not a dataset' if obj is not None else 'not found'
                raise PriorInputError(f'{path.name}: {key!r} {what}; datasets: '
                                      + ', '.join(_h5_datasets(f)[:50]))
            return np.asarray(obj[()])
    raise PriorInputError(f'{path.name}: unknown input format {suffix!r} '
                          f'(use one of {INPUT_SUFFIXES})')


def poses_to_samples(poses: np.ndarray) -> Tuple[np.ndarray, Tuple[int, ...], int]:
    """Raw array -> ``(finite samples (N, D) float64, pose_shape, dropped count)``."""
    if poses.dtype.kind not in 'fiu':
        raise PriorInputError(f'poses must be numeric, got dtype {poses.dtype}')
    if poses.ndim < 2:
        raise PriorInputError(f'poses must be (N, D) or (..., J-1, 3), got {poses.shape}')
    pose_shape = tuple(poses.shape[-1:] if poses.ndim == 2 else poses.shape[-2:])
    X = poses.reshape(-1, math.prod(pose_shape)).astype(np.float64)
    ok = np.isfinite(X).all(1)
    return X[ok], pose_shape, int(X.shape[0] - ok.sum())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the process exit status."""
    args = _parser().parse_args(argv)
    output = Path(args.output)
    if output.suffix.lower() != '.npz':
        print(f'error: output must end in .npz, got {output.name!r}', file=sys.stderr)
        return 2
    if output.exists() and not args.overwrite:
        print(f'error: {output} exists; pass --overwrite to replace it', file=sys.stderr)
        return 1
    # Imported on use: --help and argument errors must not load torch or mmengine.
    from ..losses.gmm_prior import fit_gmm_pose_prior, gmm_log_likelihood, save_gmm_prior
    try:
        X, pose_shape, dropped = poses_to_samples(read_poses(Path(args.input), args.key))
        total = X.shape[0] + dropped
        if dropped:
            print(f'dropped {dropped} of {total} poses with NaN/inf values', file=sys.stderr)
        if args.max_samples is not None and X.shape[0] > args.max_samples:
            rng = np.random.default_rng(args.seed)
            X = X[np.sort(rng.choice(X.shape[0], args.max_samples, replace=False))]
        if X.shape[0] < args.n_components:
            raise PriorInputError(f'{X.shape[0]} usable poses cannot fit '
                                  f'{args.n_components} components')
        bar = None
        if not args.no_progress:
            from tqdm import tqdm
            bar = tqdm(total=args.iters, desc='EM', unit='it', file=sys.stderr)

        def progress(it: int, ll: float) -> None:
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loglik=f'{ll:.4g}')
        try:
            gmm = fit_gmm_pose_prior(X, args.n_components, iters=args.iters, reg=args.reg,
                                     seed=args.seed, tol=args.tol, progress=progress)
        finally:
            if bar is not None:
                bar.close()
        ll = gmm_log_likelihood(X, gmm)
        gmm['pose_shape'] = pose_shape
        meta = dict(source=Path(args.input).name, key=args.key, n_samples=int(X.shape[0]),
                    n_dropped=dropped, n_components=args.n_components, iters=args.iters,
                    reg=args.reg, tol=args.tol, seed=args.seed, mean_log_likelihood=ll)
        output.parent.mkdir(parents=True, exist_ok=True)
        save_gmm_prior(output, gmm, metadata=meta)
    except (ValueError, KeyError, OSError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'wrote {output}: {args.n_components} components over {X.shape[1]} values '
          f'(pose shape {pose_shape}) from {X.shape[0]} poses; mean log-likelihood '
          f'{ll:.4f}; weights ' + ', '.join(f'{w:.3f}' for w in gmm['weights']))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
