"""What a dataset fit writes: each fitted batch as a chunk of arrays
(:func:`batch_arrays`), the chunks merged into ``fit_results.h5`` (:func:`merge_chunks`,
written atomically) and the fit's per-camera and per-keypoint quality table
(:func:`write_fit_quality`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import h5py
import numpy as np
import torch

from smilfit.body_models.point_edges import model_point_edges
from smilfit.body_models.keypoint_naming import POINT_SOURCES
from smilfit.datasets.hdf5.files import CHECKSUMMED_METADATA, create_checked, read_h5
from smilfit.registrants.marker_placement import KEYPOINT_DEFINITIONS
from smilfit.utils.atomic import atomic_path, write_text

from .observations import sample_camera_names
from .reprojection import fitted_points, point_reprojection_errors

#: The results file of a dataset fit, in its work dir.
RESULTS_NAME = 'fit_results.h5'
#: The per-animal skeletons of a dataset fit, in its chunks folder.
SKELETON_NAME = 'skeletons.npz'
#: Files the quality report of a fit is written to (in the work dir).
QUALITY_JSON, QUALITY_TEXT = 'fit_quality.json', 'fit_quality.txt'


def batch_arrays(result, observations: Mapping[str, torch.Tensor], registrant,
                 indices: np.ndarray, save_vertices: bool) -> Dict[str, np.ndarray]:
    """Everything written per fitted sample, as float32/bool numpy arrays."""
    f32 = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
    out = {'index': indices.astype(np.int64), 'joints': f32(result.output.joints),
           'total_loss': f32(result.total_loss),
           'diverged': result.diverged.cpu().numpy()}
    if result.output.keypoints is not None:
        out['keypoints'] = f32(result.output.keypoints)
    if save_vertices and result.output.vertices is not None:
        out['vertices'] = f32(result.output.vertices)
    for name, value in result.params.items():
        out[f'param_{name}'] = f32(value)
    for name, value in result.losses.items():
        out[f'loss_{name}'] = f32(value)
    if getattr(result, 'exchanged', None) is not None:
        out['exchanged_views'] = result.exchanged.cpu().numpy().astype(bool)
    handler = registrant.keypoint_handler()
    if handler is not None and 'keypoints_2d' in observations and 'K' in observations:
        points = fitted_points(result, handler)
        errors = point_reprojection_errors(points, observations, handler.model_index,
                                           handler.data_index)
        out['reprojection_px'] = f32(torch.nanmedian(errors, dim=-1).values)
        # The fitted points and their errors in the data's keypoint order (NaN where no
        # model point is matched): what the .slp export, the quality table and the
        # benchmark read.
        B, C, K = observations['keypoints_2d'].shape[:3]
        point_px = torch.full((B, C, K), float('nan'), dtype=errors.dtype,
                              device=errors.device)
        point_px[:, :, handler.data_index] = errors
        out['reprojection_point_px'] = f32(point_px)
        fitted = torch.full((points.shape[0], K, 3), float('nan'), dtype=points.dtype,
                            device=points.device)
        fitted[:, handler.data_index] = points.index_select(1, handler.model_index)
        out['fitted_keypoints_3d'] = f32(fitted)
    return out


class QualityGather:
    """What the quality table reads of a fit's batches, gathered as they stream past
    (:func:`merge_chunks`): the point errors per camera and keypoint
    (:class:`~smilfit.evaluation.fit_quality.PointErrorTable`: histograms, as large for
    a long recording as for a short one), the failed samples, the views fitted with left
    and right exchanged and the network starts; never the whole fit's arrays."""

    def __init__(self, reader) -> None:
        from smilfit.evaluation.fit_quality import PointErrorTable
        self.reader = reader
        self.table = PointErrorTable(list(reader.keypoint_names))
        #: the dataset's indices of the failed samples
        self.failed: List[int] = []
        #: (sample index, camera name) of each view fitted with left and right exchanged
        self.exchanged: Optional[List[Tuple[int, str]]] = None
        #: (started from the network, samples), where the fit had network starts
        self.network: Optional[List[int]] = None

    def add(self, chunk: Mapping[str, np.ndarray]) -> None:
        """One batch's arrays (``index``, ``session``, ``diverged``,
        ``reprojection_point_px``, and ``exchanged_views``, ``network_start`` where
        present)."""
        errors = chunk['reprojection_point_px']
        names = sample_camera_names(self.reader, chunk['session'], errors.shape[1])
        self.table.add(errors, names, chunk['diverged'])
        self.failed += np.asarray(chunk['index'])[np.asarray(chunk['diverged'], bool)].tolist()
        if 'exchanged_views' in chunk:
            self.exchanged = self.exchanged or []
            rows, views = np.nonzero(np.asarray(chunk['exchanged_views'], bool))
            self.exchanged += [(int(chunk['index'][r]), names[r][c])
                               for r, c in zip(rows, views)]
        if 'network_start' in chunk:
            won = np.asarray(chunk['network_start'], bool)
            self.network = [a + b for a, b in zip(self.network or [0, 0],
                                                  [int(won.sum()), won.size])]


#: Keys of the chunks the quality table reads (:class:`QualityGather`).
QUALITY_KEYS = ('index', 'session', 'diverged', 'reprojection_point_px', 'exchanged_views',
                'network_start')


def _dataset_name(key: str) -> str:
    """Where a chunk's array ``key`` goes in ``fit_results.h5``."""
    group, _, name = key.partition('_')
    if group in ('param', 'loss') and name:
        return f'{"params" if group == "param" else "losses"}/{name}'
    if key in ('index', 'session', 'frame', 'animal', 'network_start'):
        return f'samples/{key}'
    if key in ('total_loss', 'diverged', 'reprojection_px', 'reprojection_point_px',
               'bad_camera_views', 'exchanged_views'):
        return f'metrics/{key}'
    return key


def merge_chunks(chunks: Path, results: Path, num_chunks: int, registrant, reader,
                 data_cfg: Mapping[str, Any], stamp: str,
                 skeleton: Optional[Mapping[str, np.ndarray]] = None) -> None:
    """Merge the ``num_chunks`` batch files of ``chunks`` into ``results`` (atomically),
    with the model's names, the per-animal ``skeleton`` and the stage history; then write
    the quality table (when the fit has per-point reprojection errors).

    The chunks stream into the file one at a time (a first pass reads their sample counts
    and histories; the first chunk gives every array's layout), so the memory a merge
    needs is one chunk's, not the whole fit's twice over (at 100,000 frames the
    concatenated arrays took more memory than the fit itself)."""
    paths = [chunks / f'batch_{i:05d}.npz' for i in range(num_chunks)]
    with np.load(paths[0]) as z:
        layout = {k: (v.shape[1:], v.dtype)
                  for k, v in ((k, z[k]) for k in z.files if k != 'history')}
    rows: List[int] = []
    histories = []   # per-batch stage records (mean losses before/after, steps)
    for path in paths:
        with np.load(path) as z:
            missing = sorted(set(layout) - set(z.files))
            if missing:
                raise ValueError(f'{path} lacks {missing}: the chunks of one fit differ; '
                                 'fit again with --overwrite')
            rows.append(int(z['index'].shape[0]))
            if 'history' in z.files:
                histories.append(json.loads(str(z['history'])))
    total = sum(rows)
    quality = QualityGather(reader) if 'reprojection_point_px' in layout else None
    model = registrant.body_model
    with atomic_path(results) as tmp:
        # (no chunk cache: every batch is written through. With HDF5's default one,
        # the memory its chunks took stayed with the process, about the file's size)
        with h5py.File(tmp, 'w', libver=CHECKSUMMED_METADATA, rdcc_nbytes=0) as f:
            f.attrs['format'] = 'smilfit-fit-results'
            f.attrs['dataset'] = str(Path(data_cfg['path']).resolve())
            f.attrs['config'] = stamp
            f.attrs['loss_history'] = json.dumps([r for h in histories for r in h])
            f.attrs['stages'] = json.dumps([s.name for s in registrant.stages])
            strings = h5py.string_dtype('utf-8')
            f.create_dataset('joint_names', data=np.array(model.joint_names, dtype=object),
                             dtype=strings)
            f.create_dataset('keypoint_names',
                             data=np.array(model.keypoint_names, dtype=object), dtype=strings)
            f.create_dataset('data_keypoint_names',
                             data=np.array(list(reader.keypoint_names), dtype=object),
                             dtype=strings)
            edges = data_skeleton_edges(registrant, len(reader.keypoint_names))
            if edges is not None:
                create_checked(f, 'data_skeleton_edges',
                               np.asarray(edges, np.int64).reshape(-1, 2))
            datasets = {k: create_checked(f, _dataset_name(k), shape=(total,) + shape,
                                          dtype=dtype)
                        for k, (shape, dtype) in layout.items()}
            start = 0
            for path, n in zip(paths, rows):
                with np.load(path) as z:
                    read = {}       # (each array is read from the batch file once)
                    for key, dataset in datasets.items():
                        value = read[key] = z[key]
                        if value.shape != (n,) + dataset.shape[1:]:
                            raise ValueError(
                                f'{path}: {key} is {value.shape}, not {n} samples of the '
                                f'first chunk\'s {dataset.shape[1:]}; fit again with '
                                '--overwrite')
                        dataset[start:start + n] = value
                    if quality is not None:
                        quality.add({k: read[k] for k in QUALITY_KEYS if k in read})
                start += n
            for key, value in (skeleton or {}).items():
                # One row per animal (samples/animal indexes them).
                if key == 'stamp':
                    continue
                if key == KEYPOINT_DEFINITIONS:   # JSON text: the offsets' markers
                    f.attrs[key] = str(value)
                    continue
                if key == 'identity':
                    value = np.asarray(value, dtype=object)
                    f.create_dataset('animals/identity', data=value, dtype=strings)
                else:
                    create_checked(f, f'animals/{key}', value)
    if quality is not None:
        write_quality_report(results.parent, quality,
                             fitted_label_places(registrant, reader, skeleton))


def fitted_label_places(registrant, reader, skeleton: Optional[Mapping[str, np.ndarray]]
                        ) -> Optional[Dict[str, Any]]:
    """Where each label sits on the fitted animals' rest bodies
    (:func:`smilfit.evaluation.label_places.label_places`), or None when no handler
    matches keypoints to model points."""
    handler = registrant.keypoint_handler()
    if handler is None or getattr(handler, 'source', None) not in POINT_SOURCES:
        return None
    from smilfit.evaluation.label_places import label_places
    return label_places(registrant.body_model, handler, list(reader.keypoint_names), skeleton)


def data_skeleton_edges(registrant, num_keypoints: int) -> Optional[List[Tuple[int, int]]]:
    """Edges between the data's keypoints from the body model's kinematic tree (each
    matched keypoint hangs on its model point's carrying joint;
    :func:`~smilfit.body_models.point_edges.kinematic_point_edges`), or ``None`` when no
    handler matches keypoints. The ``.slp`` export draws them where the dataset has no
    skeleton of its own."""
    handler = registrant.keypoint_handler()
    if handler is None or getattr(handler, 'source', None) not in POINT_SOURCES:
        return None
    return model_point_edges(registrant.body_model, handler.source,
                             handler.model_index.tolist(), handler.data_index.tolist(),
                             num_keypoints)


def read_fitted_keypoints(results: Path, error: type, hint: str) -> Dict[str, Any]:
    """The fitted 3D keypoints of a ``fit_results.h5``.

    Returns:
        dict of ``points`` (N, M, 3) float64, ``index`` (N,) the dataset's sample indices,
        ``diverged`` (N,) bool (False where the file records none), ``attrs`` (the
        file's attributes, e.g. ``dataset``) and ``edges`` (the data keypoints' skeleton
        edges from the body model as index pairs, ``None`` in older files).

    Raises:
        error: (the caller's error class) the file has no fitted keypoints; ``hint`` says
            what to do.
    """
    with read_h5(results, 'fit results', written_whole=True) as f:
        if 'fitted_keypoints_3d' not in f:
            raise error(f'{results} has no fitted_keypoints_3d: {hint}')
        index = f['samples/index'][:]
        diverged = (f['metrics/diverged'][:].astype(bool) if 'metrics/diverged' in f
                    else np.zeros(len(index), bool))
        edges = (f['data_skeleton_edges'][:].tolist() if 'data_skeleton_edges' in f
                 else None)
        return dict(points=f['fitted_keypoints_3d'][:].astype(np.float64), index=index,
                    diverged=diverged, attrs=dict(f.attrs), edges=edges)


def write_fit_quality(work_dir: Path, merged: Mapping[str, np.ndarray], reader,
                      places: Optional[Mapping[str, Any]] = None) -> str:
    """Per-camera and per-keypoint reprojection table of a fit's merged arrays
    (:data:`QUALITY_KEYS`; :func:`smilfit.evaluation.fit_quality.fit_quality`), with where
    each label sits on the body (``places``, :func:`fitted_label_places`) where given,
    written to ``work_dir`` as JSON and text; returns the text."""
    quality = QualityGather(reader)
    quality.add(merged)
    return write_quality_report(work_dir, quality, places)


def write_quality_report(work_dir: Path, quality: QualityGather,
                         places: Optional[Mapping[str, Any]] = None) -> str:
    """The quality table of what ``quality`` gathered, written as :func:`write_fit_quality`
    says; returns the text."""
    # Imported here: smilfit.evaluation registers every metric and loads
    # mmengine.evaluator, which a fit needs only once, for this table.
    from smilfit.evaluation.fit_quality import format_fit_quality
    report = quality.table.report()
    report['failed_samples'] = [int(i) for i in quality.failed]
    text = format_fit_quality(report)
    if quality.exchanged is not None:     # keypoint handler's exchange_left_right
        report['exchanged_views'] = [dict(sample=s, camera=c) for s, c in quality.exchanged]
        n = len(quality.exchanged)
        text += (f'\n{n} instance views fitted with left and right labels '
                 'exchanged (they fit the body better so)'
                 + (': ' + ', '.join(f'sample {e["sample"]} {e["camera"]}'
                                     for e in report['exchanged_views'][:20])
                    + (' ...' if n > 20 else '') if n else ''))
    if quality.network is not None:     # a fit from a network's predictions (data.init_from)
        won, total = quality.network
        report['network_starts'] = won
        text += (f'\n{won} of {total} samples started from the network '
                 '(data.init_from); the others from the default start')
    if places and places.get('keypoints'):
        from smilfit.evaluation.label_places import format_label_places
        report['label_places'] = dict(places)
        text += '\n' + format_label_places(places)
    write_text(work_dir / QUALITY_JSON, json.dumps(report, indent=1))
    write_text(work_dir / QUALITY_TEXT, text + '\n')
    return text


__all__ = ['RESULTS_NAME', 'SKELETON_NAME', 'QUALITY_JSON', 'QUALITY_TEXT', 'batch_arrays',
           'merge_chunks', 'write_fit_quality', 'write_quality_report', 'QualityGather',
           'fitted_label_places', 'read_fitted_keypoints']
