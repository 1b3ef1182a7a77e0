"""What ``benchmarks/holdout.py`` and ``holdout_synthetic.py`` share: the peers beside the
fit (anipose's triangulations, where aniposelib is installed), the ``--noise`` protocol's
options, and the rows of their tables (every method's held-out and 3D error on the
points all methods give)."""
from __future__ import annotations

import argparse
from typing import Dict, List, Mapping, Optional, Sequence

#: The errors of a pose estimator's predictions the issue's protocol adds: 3 px on every
#: point, 5 % of the points 20-60 px off, 3 % of the instances with left and right exchanged.
PREDICTION_NOISE = '3,0.05,0.03'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--noise``, ``--noise-seed``, ``--peers``, ``--eks-python``, ``--tables`` and
    ``--table-suffix``."""
    parser.add_argument('--noise', metavar='SIGMA,OUTLIERS,SWAPS', default=None,
                        help='add errors to every fitted view\'s labels (px, share of points '
                        'moved 20-60 px, share of instances with left and right exchanged; '
                        f'prediction-like: {PREDICTION_NOISE}) and score against the labels '
                        'as they were')
    parser.add_argument('--noise-seed', type=int, default=0)
    parser.add_argument('--peers', choices=['anipose', 'none'], default='anipose',
                        help="anipose's triangulations beside the fit and DLT (needs "
                        'aniposelib; skipped with a note where it is not installed)')
    parser.add_argument('--eks-python', metavar='PYTHON', default=None,
                        help='also the multi-camera Ensemble Kalman Smoother (Lightning '
                        "Pose's eks), run by this interpreter of its own environment "
                        '(smilfit/evaluation/eks_peer.py says how to make it)')
    parser.add_argument('--tables', metavar='DIR', default=None,
                        help='also write the summary table as Markdown to DIR')
    parser.add_argument('--table-suffix', default='',
                        help="added to the table's name (e.g. '_video': "
                             'holdout_synthetic_video[_noise].md)')


def label_noise(args):
    """The :class:`~smilfit.datasets.label_noise.LabelNoise` of ``--noise`` (or None)."""
    from smilfit.datasets.label_noise import LabelNoise
    return None if args.noise is None else LabelNoise.parse(args.noise, seed=args.noise_seed)


def noise_suffix(args) -> str:
    """``''`` or ``'_noise'``: the table name's suffix (the command in the table's header
    says which noise)."""
    return '' if args.noise is None else '_noise'


def variant_suffix(variant: str) -> str:
    """``''`` for the shipped config, else ``'_<variant>'`` (``+`` as ``_``)."""
    return '' if variant == 'shipped' else '_' + variant.replace('+', '_')


def make_peers(args, edges: Sequence[Sequence[int]]) -> Dict[str, object]:
    """anipose's peers for a dataset with skeleton ``edges`` (none with ``--peers none``,
    or when aniposelib is missing: then a note says how to install it), and the Ensemble
    Kalman Smoother where ``--eks-python`` names its interpreter."""
    from smilfit.evaluation.eks_peer import eks_peer
    from smilfit.evaluation.triangulation_peers import (PEERS_INSTALL, aniposelib_available,
                                                         aniposelib_peers)
    peers: Dict[str, object] = {}
    if args.peers == 'anipose':
        if aniposelib_available():
            peers.update(aniposelib_peers(edges))
        else:
            print(f'note: anipose columns left out, aniposelib is not installed '
                  f'({PEERS_INSTALL})')
    if args.eks_python:
        peers['EKS'] = eks_peer(args.eks_python)
    return peers


def _cell(stats: Optional[Mapping[str, Optional[float]]]) -> str:
    if not stats or stats.get('median') is None:
        return 'n/a'
    return f"{stats['median']:.2f} ({stats['p90']:.2f})"


def method_names(reports: Sequence[Mapping]) -> List[str]:
    """The methods of the reports' summaries, in their order (the fit and DLT first)."""
    names: List[str] = ['fit', 'DLT']
    for report in reports:
        for block in report['k'].values():
            for group in (block.get('methods') or {}).values():
                for name in (group or {}).get('by', {}):
                    if name not in names:
                        names.append(name)
    return names


def method_cells(block: Mapping, names: Sequence[str]) -> List[str]:
    """Held-out px ``median (p90)`` per method, then the fit over DLT (median, p90), then
    the 3D median (p90) per method (each on the points every method gives), then the
    left/right swaps of the added noise the fit found, of those made (and how many it
    made where none was)."""
    methods = block.get('methods') or {}
    px = methods.get('px')
    if px is None:       # no peers: fit and DLT on the points both give
        g = block['all']
        by = dict(fit=dict(median=g['fit_median_px'], p90=g['fit_p90_px']),
                  DLT=dict(median=g['dlt_median_px'], p90=g['dlt_p90_px']))
    else:
        by = px['by']
    fit, dlt = by.get('fit') or {}, by.get('DLT') or {}
    ratio = 'n/a'
    if fit.get('median') and dlt.get('median'):
        ratio = f"{fit['median'] / dlt['median']:.2f}, {fit['p90'] / dlt['p90']:.2f}"
    world = (methods.get('world') or {}).get('by', {})
    ex = block.get('exchanges')
    exchanges = 'n/a' if not ex else f"{ex['found']} of {ex['made']} ({ex['wrong']})"
    return ([_cell(by.get(n)) for n in names] + [ratio]
            + [_cell(world.get(n)) for n in names] + [exchanges])


def method_header(names: Sequence[str]) -> List[str]:
    """The column names of :func:`method_cells`."""
    return ([f'{n} px' for n in names] + ['fit / DLT (med, p90)']
            + [f'{n} 3D' for n in names] + ['L/R swaps found (wrongly)'])
