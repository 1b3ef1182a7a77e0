"""tools/fit.py's SLEAP export: fitted keypoints as predictions, one video per session/camera."""
import numpy as np
import pytest
import torch
from mmengine.config import Config

from smilfit.apis.fitting import export_fit_slp, fit_dataset
from smilfit.datasets import DatasetReader, generate_synthetic_dataset

from ..conftest import REPO_ROOT


def test_fit_then_slp_matches_the_observations(tmp_path):
    torch.set_num_threads(1)
    data = tmp_path / 'syn.h5'
    generate_synthetic_dataset(data, num_sessions=2, frames_per_session=2, num_views=2,
                               image_size=64, masks=False, progress=False, seed=3)
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'fitting' / 'demo_mouse.py'))
    cfg.data = dict(path=str(data), batch_size=4)
    cfg.registrant.hooks = []
    results = fit_dataset(cfg, tmp_path / 'work', progress=False)
    slp = export_fit_slp(results, tmp_path / 'work' / 'fit.slp')

    import sleap_io as sio
    labels = sio.load_slp(str(slp))
    reader = DatasetReader(data)
    assert sorted(v.filename for v in labels.videos) == sorted(
        f'{s}/{c}' for s, cams in zip(reader.session_names, reader.camera_names) for c in cams)
    assert len(labels.labeled_frames) == len(reader) * 2
    assert labels.skeletons[0].node_names == list(reader.keypoint_names)
    batch = reader.read(np.arange(len(reader)), keys=['keypoints_2d', 'session', 'frame'])
    errors = []
    for lf in labels.labeled_frames:
        session, camera = lf.video.filename.split('/')
        s = list(reader.session_names).index(session)
        c = list(reader.camera_names[s]).index(camera)
        row = np.nonzero((batch['session'] == s) & (batch['frame'] == lf.frame_idx))[0][0]
        observed = batch['keypoints_2d'][row, c]
        ok = np.isfinite(observed).all(-1)
        errors.append(np.linalg.norm(lf.instances[0].numpy()[ok] - observed[ok], axis=-1))
    # the fit is accurate on noise-free synthetic data: predictions sit on the detections
    assert np.median(np.concatenate(errors)) < 0.5


def test_prepare_data_ingests_a_sleap_session_directly(tmp_path):
    """data.sleap: a SLEAP session is ingested (keypoints and cameras, no images) once."""
    from smilfit.apis.fitting import StaleDataError, prepare_data
    from ..conftest import shared_path
    session = shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')
    out = tmp_path / 'session.h5'
    prepare_data(dict(data=dict(path=str(out), sleap=dict(input=str(session), frame_skip=10))),
                 progress=False)
    reader = DatasetReader(out)
    assert len(reader) == 12 and list(reader.camera_names[0]) == ['back', 'mid', 'side', 'top']
    assert all(blob == b'' for blob in reader.read([0])['images'][0])   # no images stored
    mtime = out.stat().st_mtime_ns
    prepare_data(dict(data=dict(path=str(out), sleap=dict(input=str(session), frame_skip=10))),
                 progress=False)
    assert out.stat().st_mtime_ns == mtime   # same source and options: not redone
    with pytest.raises(StaleDataError, match=r'options changed'):  # never fitted stale
        prepare_data(dict(data=dict(path=str(out), sleap=dict(input=str(session)))),
                     progress=False)
