"""The sequence demo (``configs/fitting/demo_mouse_sequence.py``) on its synthetic video:
its 3D accuracy against the truth, with the motion prior, with every frame alone, and
with another revision's config beside them.

For each ``--seeds`` value the demo's data (two sessions of 64 frames, 4 cameras, poses
moving about 0.06 rad a frame: the config's ``data.synthetic`` with that seed) are made
once, by this checkout, and fitted by ``tools/fit.py`` on one thread:

- ``motion prior``: the config as shipped (every stage by Levenberg-Marquardt, the last
  over each session's chain of frames and its shared shape);
- ``every frame alone``: the same with the motion prior's weight 0;
- ``--before REV``: the config of that revision (a commit, or a name of the changelog's
  baselines such as ``before-motion-prior``, whose last stage was L-BFGS over the
  sequence's summed loss), in a temporary git worktree with its own code, on the same
  data in batches of one session.

Errors are the fitted model keypoints' distances to the true ones, median and 90th
percentile over every keypoint of every frame, in % of the body length.

Usage::

    python benchmarks/sequence_demo.py [--seeds 0 1 2 3] [--before before-motion-prior]
        [--tables docs/tables]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fitting_against import _checkout  # noqa: E402
from tables import command_line, emit  # noqa: E402

CONFIG = 'configs/fitting/demo_mouse_sequence.py'


def _fit(checkout: Path, data: Path, out: Path, options) -> Path:
    """``tools/fit.py`` of ``checkout``'s sequence config on ``data`` (one thread, its own
    code); the results file."""
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS='1',
               MKL_NUM_THREADS='1')
    cmd = [sys.executable, 'tools/fit.py', CONFIG, '--work-dir', str(out), '--threads', '1',
           '--no-progress', '--no-visualize', '--no-slp', '--no-anipose', '--overwrite',
           '--cfg-options', f'data.path={data}', *options]
    done = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f'tools/fit.py failed in {checkout}:\n{done.stderr[-2000:]}')
    return out / 'fit_results.h5'


def keypoint_errors(results: Path, data: Path):
    """(N,) every fitted model keypoint's distance to its true place in ``data``."""
    import h5py
    import numpy as np
    with h5py.File(results) as fit, h5py.File(data) as truth:
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in truth['keypoint_names'][()]]
        index = [names.index(n.decode() if isinstance(n, bytes) else str(n))
                 for n in fit['keypoint_names'][()]]
        err = np.linalg.norm(fit['keypoints'][()] - truth['keypoints_3d'][()][:, index],
                             axis=-1)
    return err[np.isfinite(err)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3],
                        help="the data's seeds (the config's is 0)")
    parser.add_argument('--before', default=None, metavar='REV',
                        help="another revision's sequence config beside this one's")
    parser.add_argument('--tables', metavar='DIR', default=None,
                        help='also write the table to DIR/sequence_demo.md')
    args = parser.parse_args(argv)

    import numpy as np
    from mmengine.config import Config

    from smilfit.datasets.synthetic import build_body_model
    from smilfit.datasets.synthetic_animals import body_length

    cfg = Config.fromfile(str(ROOT / CONFIG))
    motion = [i for i, h in enumerate(cfg.registrant.handlers)
              if h['type'] == 'MotionPriorHandler']
    if len(motion) != 1:
        raise SystemExit(f'{CONFIG} should have one MotionPriorHandler, has {len(motion)}')
    synthetic = dict(cfg.data.synthetic)
    per_batch = int(synthetic['frames_per_session'])
    length = body_length(build_body_model(None))
    sides = [('motion prior', []),
             ('every frame alone', [f'registrant.handlers.{motion[0]}.weight=0.0'])]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with (_checkout(args.before, tmp / 'before') if args.before
              else contextlib.nullcontext()) as old:
            for seed in args.seeds:
                data = tmp / f'video_{seed}.h5'
                options = [f'data.synthetic.seed={seed}']
                runs = [(name, ROOT, options + extra) for name, extra in sides]
                if old is not None:
                    # the same data (their options, so the revision takes them for its
                    # own), one session a batch as its config meant
                    runs.append((f'`{args.before}`', old, options + [
                        f'data.synthetic.{k}={v}' for k, v in synthetic.items()
                        if k in ('frames_per_session', 'pose_correlation')]
                        + [f'data.batch_size={per_batch}']))
                for i, (name, checkout, opts) in enumerate(runs):
                    err = 100.0 * keypoint_errors(
                        _fit(checkout, data, tmp / f'fit_{seed}_{i}', opts), data) / length
                    rows.append([seed, name, f'{np.median(err):.3f}',
                                 f'{np.percentile(err, 90):.3f}'])
                    print(f'seed {seed}, {name}: done', flush=True)
    emit('sequence_demo', ['seed', 'fit', 'keypoints 3D median % of body',
                           '90th percentile'], rows, args.tables,
         command_line(argv, 'sequence_demo.py'))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
