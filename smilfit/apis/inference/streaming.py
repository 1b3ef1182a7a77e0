"""The streaming loop: :func:`run_inference` reads a :class:`~.sources.FrameSource` in chunks,
writes each chunk's outputs as soon as they are computed (resumable), then assembles
``predictions.h5``, the ``.slp`` and the overlay video."""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ...datasets.hdf5.files import read_h5
from ...datasets.ingest_images import BBOX_MARGIN
from ...utils.atomic import load_npz_whole, save_npz
from ...visualization.mesh_export import export_meshes
from ..fitting.config import code_identity
from .common import InferenceError, PathLike
from .following_boxes import FollowingBoxes
from .outputs import (CHUNK_PREFIX, _chunk_arrays, _chunk_len, _chunk_paths, _merge_h5,
                      _mesh_name, _render_video, _skeleton_edges, _write_slp)
from .samples import make_sample, predict_samples
from .smoothing import CameraSmoother
from .sources import FrameSource, RigBoxes, SleapBoxes

#: Overlay video layouts (``video=``): predictions drawn on the frame, or beside it.
VIDEO_MODES = ('overlay', 'side_by_side')
#: The options a chunk folder was written with (a resumed run must use the same).
STAMP_NAME = 'options.json'


def weights_identity(model) -> str:
    """A SHA-256 (16 hex digits) of ``model``'s state (every tensor's name, dtype, shape
    and bytes): what identifies the network that predicted a chunk, for resuming."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f'{name}:{t.dtype}:{tuple(t.shape)}'.encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def run_inference(model, pipeline: Sequence[Any], source: FrameSource, out_dir: PathLike,
                  *, crop_mode: str = 'default',
                  bbox: Union[SleapBoxes, RigBoxes, FollowingBoxes, None] = None,
                  bbox_margin: float = BBOX_MARGIN, target_size: Optional[int] = None,
                  camera_smoothing: float = 0.0, chunk_size: int = 64, batch_size: int = 16,
                  save_meshes: bool = False, save_features: bool = False,
                  video: Optional[str] = 'overlay', video_scale: float = 1.0,
                  mesh_overlay: bool = False, slp: bool = True, resume: bool = False,
                  overwrite: bool = False, progress: bool = True,
                  body_model: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Stream ``source`` through ``model`` and write the outputs to ``out_dir``.

    Args:
        model: a regressor from :func:`load_regressor` (eval mode).
        pipeline: its test transforms (:func:`build_test_pipeline`).
        source: a :class:`FrameSource`: :class:`VideoFrames`, :class:`ImageFolderFrames`,
            :class:`SyncedVideoFrames` or :class:`HDF5Frames`; its ``num_views`` must
            equal the model's.
        crop_mode: ``default``, ``centred`` or ``bbox_crop`` (needs ``bbox``, one item
            per SLEAP instance, frames without instances skipped: a :class:`SleapBoxes`
            for a single-view model, a :class:`RigBoxes` of every camera for a
            multi-view one; a camera that does not see the instance is an invalid view;
            either wrapped in :class:`~.following_boxes.FollowingBoxes` to box what SLEAP
            leaves empty around the previous frame's prediction, frame by frame).
        camera_smoothing: ``alpha`` of :class:`CameraSmoother` for predicted cameras
            (0: off; refused for calibrated, fixed cameras).
        chunk_size: frames per chunk file (memory and resume granularity).
        batch_size: items per model call.
        save_meshes: one ``.obj`` per item in ``meshes/``.
        save_features: the model's features in the outputs.
        video: ``'overlay'``, ``'side_by_side'`` or None: ``overlay.mp4``.
        video_scale: output video scale (e.g. 0.5 for half size: faster).
        mesh_overlay: draw the mesh in the video (z-buffer render; slower).
        slp: write ``predictions.slp``.
        resume: keep finished chunks of an earlier run with the same options, model
            weights (:func:`weights_identity`) and smilfit code.
        overwrite: start again in an ``out_dir`` that holds results.
        body_model: the model's body model config (``cfg.model.body_model``), recorded in
            ``predictions.h5`` (``body_model`` attribute, JSON; a relative model file
            made absolute) so that the viewer can pose the predicted meshes.

    Returns:
        ``dict(predictions=path, slp=path|None, video=path|None, meshes=[paths],
        num_items=..., num_frames=...)``.
    """
    from tqdm import tqdm
    out_dir = Path(out_dir)
    C = int(getattr(model, 'num_views', 1))
    if source.num_views != C:
        raise InferenceError(f'the model has {C} view slots but the input has '
                             f'{source.num_views} views ({source.camera_names})')
    if video is not None and video not in VIDEO_MODES:
        raise InferenceError(f'video must be one of {VIDEO_MODES} or None, got {video!r}')
    if crop_mode == 'bbox_crop' and (bbox is None or bbox.num_views != C):
        raise InferenceError("crop_mode 'bbox_crop' needs SLEAP instances to box "
                             f'(--bbox-slp) in each of the model\'s {C} views, got '
                             f'{0 if bbox is None else bbox.num_views}')
    codec = getattr(model, 'camera_codec', None)
    if camera_smoothing > 0 and codec is not None and not codec.predict and \
            codec.uses_calibration:
        raise InferenceError('camera smoothing smooths predicted cameras; this model uses '
                             'the calibrated cameras as they are')
    chunk_dir = out_dir / 'chunks'
    # Boxes that follow the network need each frame's prediction before the next frame.
    follow = bool(getattr(bbox, 'follows_predictions', False))
    # (the weights and the code too: chunks another model or version predicted are stale)
    stamp = json.dumps(dict(crop_mode=crop_mode, bbox=bbox is not None, margin=bbox_margin,
                            follow=follow, weights=weights_identity(model),
                            code=code_identity(),
                            target_size=target_size, smoothing=camera_smoothing,
                            chunk_size=chunk_size, frames=[int(x) for x in
                                                           source.frame_numbers[:1]] + [
                                len(source)], features=save_features), sort_keys=True)
    existing = _chunk_paths(chunk_dir) if chunk_dir.exists() else []
    if existing or (out_dir / 'predictions.h5').exists():
        if overwrite:
            for p in existing:
                p.unlink()
            existing = []
        elif not resume:
            raise FileExistsError(f'{out_dir} holds results; pass resume=True (--resume) or '
                                  'overwrite=True (--overwrite)')
        elif (chunk_dir / STAMP_NAME).exists() and \
                (chunk_dir / STAMP_NAME).read_text() != stamp:
            raise FileExistsError(f'{chunk_dir} was written with other options, model '
                                  'weights or smilfit code; use --overwrite')
    chunk_dir.mkdir(parents=True, exist_ok=True)
    (chunk_dir / STAMP_NAME).write_text(stamp)
    smoother = CameraSmoother(camera_smoothing) if camera_smoothing > 0 else None
    mesh_dir = out_dir / 'meshes'
    mesh_paths: List[Path] = []
    faces = model.body_model.faces.cpu().numpy()
    n_frames = len(source)
    starts = range(0, n_frames, int(chunk_size))
    bar = tqdm(total=n_frames, desc='inference', disable=not progress)
    try:
        for k, start in enumerate(starts):
            path = chunk_dir / f'{CHUNK_PREFIX}{k:05d}.npz'
            stop = min(start + int(chunk_size), n_frames)
            if resume and path.exists():
                done = load_npz_whole(path)
                if done is not None:
                    if smoother is not None:
                        smoother.load(done)
                    if follow and len(done['frame']):
                        bbox.resume(done['keypoints_2d'][-1])
                    bar.update(stop - start)
                    continue
                # (written atomically, so damaged since: e.g. a copy cut short)
                warnings.warn(f'{path} cannot be read whole; running its frames again')
            samples, items = [], []
            preds: List[Dict[str, Any]] = []
            for i in range(start, stop):
                frames = source.read(i)
                cams = source.cameras(i)
                if crop_mode == 'bbox_crop':
                    inst_points = bbox.points(source.meta(i)['frame'])
                    boxes = [p if p.ndim == 3 else p[None] for p in inst_points]
                else:
                    boxes = [None]
                for j, pts in enumerate(boxes):
                    samples.append(make_sample(frames, cams, crop_mode, pts, target_size,
                                               bbox_margin, len(model.keypoint_names)))
                    items.append((i, j))
                    if len(samples) == batch_size:
                        preds += predict_samples(model, samples, pipeline)
                        samples = []
                if follow:
                    frame_preds = predict_samples(model, samples, pipeline) if samples else []
                    preds += frame_preds
                    samples = []
                    bbox.observe(frame_preds)
                bar.update(1)
            if samples:
                preds += predict_samples(model, samples, pipeline)
            if not preds:       # no instance in this chunk: an empty marker chunk
                save_npz(path, dict(frame=np.zeros(0, np.int64)))
                continue
            arrays, verts = _chunk_arrays(model, preds, items, source, smoother,
                                          save_features, save_meshes)
            if save_meshes:
                names = [_mesh_name(source.meta(int(i))['session'], f, j) for i, f, j in
                         zip(arrays['item'], arrays['frame'], arrays['instance'])]
                mesh_paths += export_meshes(mesh_dir, verts, faces, names=names)
            save_npz(path, arrays)
    finally:
        bar.close()
    chunks = [p for p in _chunk_paths(chunk_dir) if _chunk_len(p)]
    if not chunks:
        raise InferenceError('nothing was predicted (no frames, or no SLEAP instances in '
                             'the selected frames)')
    result: Dict[str, Any] = dict(meshes=mesh_paths or sorted(mesh_dir.glob('*.obj')))
    names = list(model.keypoint_names)
    attrs = dict(format='smilfit-inference', keypoint_names=names,
                 camera_names=list(source.camera_names), joint_names=list(
                     model.body_model.joint_names), crop_mode=crop_mode,
                 camera_smoothing=camera_smoothing, coordinates='source pixels')
    recorded = _recorded_body_model(body_model)
    if recorded is not None:
        attrs['body_model'] = recorded
    pred_path = out_dir / 'predictions.h5'
    _merge_h5(chunks, pred_path, attrs)
    result['predictions'] = pred_path
    edges = _skeleton_edges(model)
    tracks = None
    if crop_mode == 'bbox_crop':
        tracks = 0
        for p in chunks:
            with np.load(p) as z:
                tracks = max(tracks, int(z['instance'].max()) + 1)
    result['slp'] = _write_slp(chunks, out_dir / 'predictions.slp', source, names, edges,
                               tracks) if slp else None
    result['video'] = _render_video(chunks, out_dir / 'overlay.mp4', source, model, video,
                                    video_scale, mesh_overlay, edges, progress) \
        if video else None
    with read_h5(pred_path, 'network predictions') as f:
        result['num_items'] = int(f['frame'].shape[0])
        result['num_frames'] = int(len(np.unique(f['item'][()])))
    source.close()
    return result


def _recorded_body_model(body_model: Optional[Mapping[str, Any]]) -> Optional[dict]:
    """The body model config as plain data with an absolute model file, or None where it
    is not plain data (a dtype object, say): the viewer then shows no mesh."""
    if body_model is None:
        return None
    from smilfit.engine.config_data import ConfigDataError, config_to_data
    try:
        data = config_to_data(body_model)
    except ConfigDataError:
        return None
    path = data.get('model_path')
    if isinstance(path, str) and Path(path).is_file():
        data['model_path'] = str(Path(path).resolve())
    return data
