"""Build a skinned body model from a skeleton file (or the demo mouse) and save it.

Run ``python tools/build_skeleton_model.py --help`` for the skeleton file formats.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from . import prog_name


DESCRIPTION = __doc__.splitlines()[0]

EPILOG = """\
skeleton file formats (positions in model units, one row / object per joint):

  CSV (.csv): columns  name, parent, x, y, z [, radius]
      An empty parent (or "-", "none", "null") marks the single root. A first row
      whose x is not a number is a header and skipped; lines starting with "#" are
      comments. Example:
          name,parent,x,y,z,radius
          pelvis,,0,0,16,11
          spine,pelvis,14,0,18,12
          tail,pelvis,-12,0,14,3.5

  JSON (.json): a list of joints, or an object with a "joints" list and optional
      "units", "up_axis" and "name" (command-line options take precedence):
          {"units": "mm", "up_axis": "z",
           "joints": [{"name": "pelvis", "parent": null, "position": [0, 0, 16],
                       "radius": 11},
                      {"name": "spine", "parent": "pelvis", "position": [14, 0, 18]}]}
      "x", "y", "z" keys may replace "position"; "radius" is optional.

Joints without a radius get radius_fraction x the mean length of their bones.
The output format follows the output suffix (.json, .json.gz or .pkl); the file is
written atomically and an existing one is only replaced with --overwrite.
"""

_ROOT_MARKERS = ('', '-', 'none', 'null')
OUTPUT_SUFFIXES = ('.json', '.json.gz', '.pkl')


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name('build_skeleton_model'), description=DESCRIPTION,
                                epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('skeleton', nargs='?', help='skeleton file (.json or .csv)')
    src.add_argument('--demo', action='store_true',
                     help='build the embedded demo mouse (mm, +z up) instead')
    p.add_argument('-o', '--output', required=True,
                   help='model file to write (.json, .json.gz or .pkl)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing output')
    p.add_argument('--radius', type=float, help='one tube radius for all joints (model units)')
    p.add_argument('--radius-fraction', type=float,
                   help='default radius as a fraction of the adjacent bone lengths (0.2)')
    p.add_argument('--rings', type=int, help='ring intervals per bone (6)')
    p.add_argument('--segments', type=int, help='vertices per ring (16)')
    p.add_argument('--cap-rings', type=int, help='rings per rounded end cap (3)')
    p.add_argument('--blend', type=float,
                   help='skinning blend half-width, fraction of the shortest bone (0.35)')
    p.add_argument('--num-betas', type=int, help='keep the first K shape directions (all)')
    p.add_argument('--shape-step', type=float,
                   help='relative change per unit shape coefficient (0.1)')
    p.add_argument('--tip-keypoints', action=argparse.BooleanOptionalAction, default=None,
                   help='add <leaf>_tip vertex keypoints (default: on for --demo only)')
    p.add_argument('--units', choices=('m', 'cm', 'mm', 'unknown'), help='length unit')
    p.add_argument('--up-axis', choices=('x', 'y', 'z', '-x', '-y', '-z'), help='up axis')
    p.add_argument('--name', help='model name (default: the skeleton file stem)')
    return p


def _float(value: Any, what: str) -> float:
    from ..body_models.mesh_from_skeleton import SkeletonError  # not at the top: a fast --help
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise SkeletonError(f'{what}: expected a number, got {value!r}') from err


def _read_csv(path: Path) -> Dict[str, Any]:
    from ..body_models.mesh_from_skeleton import SkeletonError  # not at the top: a fast --help
    names: List[str] = []
    parents: List[Optional[str]] = []
    positions: List[List[float]] = []
    radii: Dict[str, float] = {}
    with open(path, newline='') as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)
                and not r[0].lstrip().startswith('#')]
    for k, row in enumerate(rows):
        row = [c.strip() for c in row]
        if k == 0 and len(row) >= 3:
            try:
                float(row[2])
            except ValueError:
                continue  # header
        if len(row) not in (5, 6):
            raise SkeletonError(f'{path.name}: row {k + 1} has {len(row)} columns, expected '
                                'name, parent, x, y, z [, radius]')
        names.append(row[0])
        parents.append(None if row[1].lower() in _ROOT_MARKERS else row[1])
        positions.append([_float(c, f'{path.name}: joint {row[0]!r}') for c in row[2:5]])
        if len(row) == 6 and row[5]:
            radii[row[0]] = _float(row[5], f'{path.name}: radius of {row[0]!r}')
    return {'joint_names': names, 'parents': parents, 'rest_positions': positions,
            'radius': radii or None}


def _read_json(path: Path) -> Dict[str, Any]:
    from ..body_models.mesh_from_skeleton import SkeletonError  # not at the top: a fast --help
    with open(path) as f:
        doc = json.load(f)
    meta: Dict[str, Any] = {}
    if isinstance(doc, dict):
        if 'joints' not in doc:
            raise SkeletonError(f'{path.name}: a JSON object needs a "joints" list')
        meta = {k: doc[k] for k in ('units', 'up_axis', 'name') if k in doc}
        doc = doc['joints']
    if not isinstance(doc, list):
        raise SkeletonError(f'{path.name}: expected a list of joints')
    names, parents, positions, radii = [], [], [], {}
    for k, joint in enumerate(doc):
        if not isinstance(joint, dict) or 'name' not in joint:
            raise SkeletonError(f'{path.name}: joint #{k} must be an object with a "name"')
        name = joint['name']
        if 'position' in joint:
            xyz = joint['position']
        elif all(a in joint for a in 'xyz'):
            xyz = [joint['x'], joint['y'], joint['z']]
        else:
            raise SkeletonError(f'{path.name}: joint {name!r} has no "position" (or x, y, z)')
        if not isinstance(xyz, list) or len(xyz) != 3:
            raise SkeletonError(f'{path.name}: joint {name!r}: position must be [x, y, z]')
        parent = joint.get('parent')
        if isinstance(parent, str) and parent.strip().lower() in _ROOT_MARKERS:
            parent = None
        names.append(name)
        parents.append(parent)
        positions.append([_float(c, f'{path.name}: joint {name!r}') for c in xyz])
        if joint.get('radius') is not None:
            radii[name] = _float(joint['radius'], f'{path.name}: radius of {name!r}')
    return {'joint_names': names, 'parents': parents, 'rest_positions': positions,
            'radius': radii or None, **meta}


def read_skeleton_file(path: str) -> Dict[str, Any]:
    """Read a ``.csv`` / ``.json`` skeleton into keyword arguments of
    :func:`~smilfit.body_models.mesh_from_skeleton.build_model_from_skeleton` (see
    ``--help``)."""
    from ..body_models.mesh_from_skeleton import SkeletonError  # not at the top: a fast --help
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == '.csv':
        return _read_csv(p)
    if suffix == '.json':
        return _read_json(p)
    raise SkeletonError(f'{p.name}: unknown skeleton format {suffix!r} (use .csv or .json)')


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the process exit status."""
    args = _parser().parse_args(argv)
    # here, not at the top: --help must not import torch
    from ..body_models.mesh_from_skeleton import build_model_from_skeleton
    output = Path(args.output)
    if not output.name.lower().endswith(OUTPUT_SUFFIXES):
        print(f'error: output must end in one of {OUTPUT_SUFFIXES}, got {output.name!r}',
              file=sys.stderr)
        return 2
    if output.exists() and not args.overwrite:
        print(f'error: {output} exists; pass --overwrite to replace it', file=sys.stderr)
        return 1
    options = {key: getattr(args, key) for key in (
        'radius', 'radius_fraction', 'rings', 'segments', 'cap_rings', 'blend', 'num_betas',
        'shape_step', 'tip_keypoints', 'units', 'up_axis', 'name')
        if getattr(args, key) is not None}
    try:
        if args.demo:
            # Imported only when this branch runs (a heavy or optional part).
            from ..body_models.demo_model import demo_model_data
            data = demo_model_data(**options)
        else:
            kwargs = read_skeleton_file(args.skeleton)
            kwargs.setdefault('name', Path(args.skeleton).stem)
            kwargs.update(options)
            data = build_model_from_skeleton(**kwargs)
        try:  # imported late: the builder itself does not need the file formats
            from ..body_models.io import save_model_data
        except ImportError as err:
            print(f'error: model file IO is unavailable: {err}', file=sys.stderr)
            return 1
        output.parent.mkdir(parents=True, exist_ok=True)
        save_model_data(data, output)  # atomic: temp file in the same folder + rename
    except (ValueError, OSError) as err:  # SkeletonError, JSON syntax, validation, I/O
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'wrote {output}: {data.num_vertices} vertices, {data.num_faces} faces, '
          f'{data.num_joints} joints, {data.num_betas} shape directions ({data.units}, '
          f'up {data.up_axis})')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
