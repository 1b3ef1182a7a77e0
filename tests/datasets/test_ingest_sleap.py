"""SLEAP ingestion into the HDF5 dataset format, on the team's real data in ../shared.

Measured on the 4-camera mouse session (default crop, 256 x 256, joint lookup below; medians
of |project(keypoints_3d) - keypoints_2d| over visible points, original-image pixels):
back 6.7, mid 4.2, top 3.1, side 105 (the side camera's calibration is a copy of top's).
"""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from smilfit.datasets.hdf5_format import DatasetReader, partial_path
from smilfit.datasets.ingest_sleap import DataIngestError, IngestOptions, ingest_sleap
from tests.conftest import REPO_ROOT, shared_path

SESSION = ('data', 'sleap_anipose_minimal_session', 'minimal_session')
CAMERAS = ['back', 'mid', 'side', 'top']
GOOD_CAMERAS = ['back', 'mid', 'top']
#: Mouse-model joints whose SLEAP node is the same anatomical point.
MOUSE_LOOKUP = {'Nose': 'Nose', 'Ear_L_tip': 'Ear_L', 'Ear_R_tip': 'Ear_R', 'Tail_00': 'TTI',
                'Tail_07': 'TailTip'}
FAST = dict(progress=False)


def session_dir():
    return shared_path(*SESSION)


def reproject(data, j, i=None):
    """Per visible point: (stored-pixel error, original-pixel error) of view j."""
    stored, orig = [], []
    for n in range(len(data['frame'])) if i is None else [i]:
        X = data['keypoints_3d'][n].astype(np.float64)
        vis = data['visible'][n, j] & np.isfinite(X).all(-1)
        if not vis.any():
            continue
        proj = cv2.projectPoints(X[vis].reshape(-1, 1, 3), cv2.Rodrigues(data['R'][n, j])[0],
                                 data['t'][n, j], data['K'][n, j], data['dist'][n, j])[0]
        diff = proj.reshape(-1, 2) - data['keypoints_2d'][n, j][vis]
        stored.append(np.linalg.norm(diff, axis=-1))
        back = diff @ np.linalg.inv(data['crop'][n, j][:2, :2]).T
        orig.append(np.linalg.norm(back, axis=-1))
    return np.concatenate(stored), np.concatenate(orig)


def assert_nothing_written(out):
    assert not out.exists(), f'{out} was written'
    assert not partial_path(out).exists(), 'partial file left behind'
    assert not any(out.parent.iterdir()), list(out.parent.iterdir())


@pytest.fixture(scope='module')
def lookup_csv(tmp_path_factory):
    from smilfit.body_models import load_model_data
    model = shared_path('models', 'SMILy_Mouse_static_joints.pkl')
    names = load_model_data(model).joint_names
    assert set(MOUSE_LOOKUP) <= set(names)
    path = tmp_path_factory.mktemp('lookup') / 'joint_lookup.csv'
    path.write_text('model_joint,data_keypoint\n'
                    + ''.join(f'{n},{MOUSE_LOOKUP.get(n, "")}\n' for n in names))
    return path, names


@pytest.fixture(scope='module')
def mouse_dataset(tmp_path_factory, lookup_csv):
    """The acceptance dataset: the whole session, default crop at 256 px, joint lookup."""
    out = tmp_path_factory.mktemp('mouse') / 'mouse.h5'
    summary = ingest_sleap(session_dir(), out, target_size=256, joint_lookup=lookup_csv[0],
                           units='mm', body_model='SMILy_Mouse_static_joints.pkl', **FAST)
    return out, summary


# ------------------------------------------------------------------------------ acceptance
def test_minimal_session_acceptance(mouse_dataset, lookup_csv):
    out, summary = mouse_dataset
    r = DatasetReader(out)
    assert len(r) == 120 and summary.num_samples == 120 and r.num_views == 4
    assert r.session_names == ['minimal_session'] and r.camera_names == [CAMERAS]
    assert r.keypoint_names == lookup_csv[1]             # the model's joints, in its order
    assert r.units == 'mm' and r.attrs['body_model'] == 'SMILy_Mouse_static_joints.pkl'
    d = r.read(np.arange(len(r)))
    assert list(d['frame']) == list(range(120))
    assert d['valid'].all() and d['calibrated'].all()
    assert (d['image_size'] == 256).all()
    unmapped = [k for k, n in enumerate(r.keypoint_names) if n not in MOUSE_LOOKUP]
    assert np.isnan(d['keypoints_2d'][:, :, unmapped]).all()
    assert not d['visible'][:, :, unmapped].any() and (d['confidence'][:, :, unmapped] == 0).all()
    assert np.isnan(d['keypoints_3d'][:, unmapped]).all()
    mapped = [r.keypoint_names.index(n) for n in MOUSE_LOOKUP]
    assert np.isfinite(d['keypoints_3d'][:, mapped]).all()
    # cameras of the stored image: K_stored = crop @ K, crop maps 1280x1024 -> 256x256
    np.testing.assert_allclose(d['crop'][0, 0], [[0.2, 0, -0.4], [0, 0.25, -0.375], [0, 0, 1]])
    np.testing.assert_allclose(d['K'][0, 0][0, 0], 0.2 * 769.8864926727645)
    # reprojection agrees within the calibration's own error on the good cameras
    for j, cam in enumerate(CAMERAS):
        stored, orig = reproject(d, j)
        if cam in GOOD_CAMERAS:
            assert np.median(orig) < 10.0, (cam, np.median(orig))
            assert np.median(stored) < 2.5, (cam, np.median(stored))
        else:
            assert np.median(orig) > 50.0   # the known bad calibration shows up, not hidden


def test_minimal_session_keypoints_and_images_match_source(mouse_dataset):
    import sleap_io as sio
    out, _ = mouse_dataset
    r = DatasetReader(out)
    folder = session_dir()
    i, j = 37, 1                                                  # frame 37, camera 'mid'
    d = r.read([i])
    labels = sio.load_slp(str(folder / 'mid' / 'minimal_mid_proofread.slp'), open_videos=False)
    lf = next(lf for lf in labels.labeled_frames if lf.frame_idx == 37)
    src = lf.instances[0].numpy()
    nose = labels.skeleton.node_names.index('Nose')
    A = d['crop'][0, j]
    expect = A[:2, :2] @ src[nose] + A[:2, 2]
    np.testing.assert_allclose(d['keypoints_2d'][0, j, r.keypoint_names.index('Nose')], expect,
                               atol=1e-3)
    # the stored image is the video frame resized (RGB, JPEG noise only)
    cap = cv2.VideoCapture(str(folder / 'mid' / 'minimal_mid.mp4'))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 37)
    ok, frame = cap.read()
    cap.release()
    assert ok
    expect_img = cv2.cvtColor(cv2.resize(frame, (256, 256), interpolation=cv2.INTER_AREA),
                              cv2.COLOR_BGR2RGB)
    img = r.read_images(i)[j]
    assert img.shape == (256, 256, 3)
    assert np.abs(img.astype(int) - expect_img).mean() < 3.0


def test_undistort_bbox_crop_consistent(tmp_path):
    out = tmp_path / 'd.h5'
    ingest_sleap(session_dir(), out, max_frames=12, frame_skip=10, target_size=128,
                 crop_mode='bbox_crop', undistort=True, **FAST)
    r = DatasetReader(out)
    d = r.read(np.arange(len(r)))
    assert len(r) == 12 and list(d['frame']) == list(range(0, 120, 10))
    assert (d['dist'] == 0).all() and (d['image_size'] == 128).all()
    assert r.attrs['undistorted'] and r.attrs['crop_mode'] == 'bbox_crop'
    for j, cam in enumerate(CAMERAS):
        if cam in GOOD_CAMERAS:
            assert np.median(reproject(d, j)[1]) < 12.0
        vis = d['keypoints_2d'][:, j][d['visible'][:, j]]
        assert ((vis > -0.5) & (vis < 127.5)).all()          # the box holds the instance
    assert r.read_images(0)[0].shape == (128, 128, 3)


def test_single_slp_session_equals_folder(tmp_path):
    folder = session_dir()
    slp = shared_path('data', 'sleap_anipose_minimal_session', 'from_talmolab_sleap',
                      'minimal_proofread.slp')
    a, b, c = tmp_path / 'a.h5', tmp_path / 'b.h5', tmp_path / 'c.h5'
    ingest_sleap(folder, a, max_frames=6, target_size=64, **FAST)
    ingest_sleap(slp, b, max_frames=6, target_size=64,
                 video_search_paths=[folder / cam for cam in CAMERAS], **FAST)
    summary = ingest_sleap(slp, c, max_frames=6, target_size=64, **FAST)   # videos not found
    ra, rb, rc = DatasetReader(a), DatasetReader(b), DatasetReader(c)
    assert rb.camera_names == ra.camera_names and rb.session_names == ['minimal_proofread']
    da, db, dc = (r.read(np.arange(6)) for r in (ra, rb, rc))
    for key in ('frame', 'keypoints_2d', 'confidence', 'visible', 'K', 'dist', 'R', 't',
                'crop', 'image_size'):
        np.testing.assert_allclose(db[key], da[key], equal_nan=True, err_msg=key)
        np.testing.assert_allclose(dc[key], da[key], equal_nan=True, err_msg=key)
    assert db['images'] == da['images']
    assert all(v == b'' for row in dc['images'] for v in row)
    assert any('video not found' in n for n in summary.notes)


def test_parent_folder_of_sessions_and_betas(tmp_path):
    parent = tmp_path / 'sessions'
    parent.mkdir()
    for name in ('mouseA', 'mouseB'):
        os.symlink(session_dir(), parent / name)
    betas = tmp_path / 'shape_betas.csv'
    betas.write_text('session,beta_0,beta_1,beta_2\nmouseA,0.1,0.2,0.3\nmouseB,-1,0,1\n')
    out = tmp_path / 'out' / 'd.h5'
    s = ingest_sleap(parent, out, max_frames=3, images=False, shape_betas=betas,
                     body_model='mouse.pkl', **FAST)
    r = DatasetReader(out)
    assert s.num_sessions == 2 and r.session_names == ['mouseA', 'mouseB'] and len(r) == 6
    d = r.read(np.arange(6))
    assert list(d['session']) == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(d['params']['betas'][0], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(d['params']['betas'][5], [-1, 0, 1])
    assert r.params_attrs['body_model'] == 'mouse.pkl'
    assert r.read_images(0) is None
    # a session missing from the betas table is an error
    betas.write_text('mouseA,0.1,0.2,0.3\n')
    out2 = tmp_path / 'out2' / 'd.h5'
    out2.parent.mkdir()
    with pytest.raises(DataIngestError, match=r"shape_betas.csv: no betas for session\(s\) "
                                              r"\['mouseB'\]"):
        ingest_sleap(parent, out2, max_frames=3, images=False, shape_betas=betas, **FAST)
    assert_nothing_written(out2)


def test_workers_are_deterministic(tmp_path):
    a, b = tmp_path / 'a.h5', tmp_path / 'b.h5'
    ingest_sleap(session_dir(), a, max_frames=5, target_size=96, workers=0, **FAST)
    ingest_sleap(session_dir(), b, max_frames=5, target_size=96, workers=2, **FAST)
    da, db = DatasetReader(a).read(np.arange(5)), DatasetReader(b).read(np.arange(5))
    assert da['images'] == db['images']
    np.testing.assert_array_equal(da['keypoints_2d'], db['keypoints_2d'])


def test_resume_ingestion(tmp_path, monkeypatch):
    from smilfit.datasets.sleap_ingest import render as mod
    fresh, out = tmp_path / 'fresh.h5', tmp_path / 'out.h5'
    opts = IngestOptions(target_size=64, max_frames=12, progress=False)
    ingest_sleap(session_dir(), fresh, options=opts)
    # an interrupted resumable run keeps its partial file ...
    monkeypatch.setattr(mod, 'BLOCK_SAMPLES', 4)
    real_job, calls = mod._run_job, []

    def flaky(args):
        calls.append(1)
        if len(calls) > 8:                    # two blocks of 4 samples x 4 views, then Ctrl-C
            raise KeyboardInterrupt
        return real_job(args)

    monkeypatch.setattr(mod, '_run_job', flaky)
    with pytest.raises(KeyboardInterrupt):
        ingest_sleap(session_dir(), out, resume=True, options=opts)
    assert partial_path(out).exists() and not out.exists()
    # ... and the next run continues it without redoing the written samples
    monkeypatch.setattr(mod, '_run_job', real_job)
    summary = ingest_sleap(session_dir(), out, resume=True, options=opts)
    assert summary.skipped_existing == 8 and summary.num_samples == 12
    assert not partial_path(out).exists()
    da, db = DatasetReader(fresh).read(np.arange(12)), DatasetReader(out).read(np.arange(12))
    assert da['images'] == db['images'] and list(db['frame']) == list(range(12))
    # resuming a finished dataset adds only the missing frames
    more = ingest_sleap(session_dir(), out, resume=True,
                        options=IngestOptions(target_size=64, max_frames=15, progress=False))
    assert more.num_samples == 15 and more.skipped_existing == 12
    # different shaping options cannot resume
    with pytest.raises(DataIngestError, match='cannot resume'):
        ingest_sleap(session_dir(), out, resume=True, target_size=32, max_frames=3, **FAST)
    assert len(DatasetReader(out)) == 15


# ------------------------------------------------------------------------------ single view
def test_fly_clip_single_view_two_instances(tmp_path):
    clip = shared_path('data', 'sleap_flies_clip', 'clip.slp')
    out = tmp_path / 'flies.h5'
    s = ingest_sleap(clip, out, max_frames=4, frame_skip=100, crop_mode='bbox_crop',
                     target_size=96, **FAST)
    r = DatasetReader(out)
    d = r.read(np.arange(len(r)))
    assert len(r) == 8 and r.num_views == 1 and len(r.keypoint_names) == 13 and s.has_images
    assert list(d['frame']) == [0, 0, 100, 100, 200, 200, 300, 300]
    assert list(d['instance']) == [0, 1] * 4 and list(d['track']) == ['female', 'male'] * 4
    assert not d['calibrated'].any()
    # default camera: f = max(W, H) of the 1024 x 1024 original, mapped by the crop
    K0 = np.linalg.inv(d['crop'][0, 0]) @ d['K'][0, 0]
    np.testing.assert_allclose(K0, [[1024, 0, 511.5], [0, 1024, 511.5], [0, 0, 1]], atol=1e-9)
    assert (d['R'] == np.eye(3)).all() and (d['t'] == 0).all()
    assert (d['confidence'][d['visible']] == 1).all()          # user-labelled points
    img = r.read_images(1)[0]
    assert img.shape == (96, 96, 3)
    vis = d['keypoints_2d'][:, 0][d['visible'][:, 0]]
    assert ((vis > 0) & (vis < 95)).all()                      # each crop holds its fly


SLEAP_IO_FILES = [
    # (path under tests/data, samples, views, keypoints, has images, has 3D)
    ('slp/centered_pair_predictions.slp', 6, 1, 24, True, False),
    ('slp/minimal_instance.pkg.slp', 2, 1, 2, True, False),
    ('slp/cropped_format_2_3.pkg.slp', 2, 1, 2, True, False),
    ('slp/multiview.slp', 6, 8, 15, False, False),
    ('slp/py_written_28_multiview3d.slp', 1, 2, 2, False, True),
    ('slp/typical.slp', 3, 1, 2, False, False),
    ('analysis-h5/centered_pair_standard.analysis.h5', 6, 1, 24, True, False),
    ('analysis-h5/multi_matlab.analysis.h5', 6, 1, 2, False, False),
]


@pytest.mark.parametrize('name,n,c,k,images,has_3d', SLEAP_IO_FILES,
                         ids=[f[0].split('/')[-1] for f in SLEAP_IO_FILES])
def test_sleap_io_test_files(tmp_path, name, n, c, k, images, has_3d):
    path = shared_path('data', 'sleap_io_js_testdata', 'tests', 'data', *name.split('/'))
    out = tmp_path / 'd.h5'
    s = ingest_sleap(path, out, max_frames=3, **FAST)
    r = DatasetReader(out)
    d = r.read(np.arange(len(r)))
    assert (len(r), r.num_views, len(r.keypoint_names)) == (n, c, k)
    assert s.has_images == images and r.has_keypoints_3d == has_3d
    assert d['valid'].any(1).all()
    kp = d['keypoints_2d']
    assert np.isfinite(kp[d['visible']]).all() and np.isnan(kp[~np.isfinite(kp).all(-1)]).all()
    assert (d['confidence'][~np.isfinite(kp).all(-1)] == 0).all()
    if images:
        first = r.read_images(0)[0]
        W, H = d['image_size'][0, 0]
        assert first.shape == (H, W, 3)


@pytest.mark.parametrize('fmt', ['coco', 'dlc'])
def test_coco_and_dlc_files(tmp_path, fmt):
    """COCO json / DLC csv (written here by sleap-io from 3 fly frames, with their images)."""
    import sleap_io as sio
    clip = shared_path('data', 'sleap_flies_clip', 'clip.slp')
    labels = sio.load_slp(str(clip), open_videos=False)
    sub = sio.Labels(labeled_frames=labels.labeled_frames[:3], videos=labels.videos,
                     skeletons=labels.skeletons, tracks=labels.tracks)
    folder = tmp_path / ('labeled-data/clip' if fmt == 'dlc' else 'coco')
    folder.mkdir(parents=True)
    cap = cv2.VideoCapture(str(clip.parent / 'clip.mp4'))
    for i in range(3):
        ok, frame = cap.read()
        name = f'img{i:04d}.png' if fmt == 'dlc' else f'clip_frame_{i:06d}.png'
        cv2.imwrite(str(folder / name), frame)
    cap.release()
    if fmt == 'dlc':
        path = folder / 'CollectedData.csv'
        sio.save_csv(sub, str(path), format='dlc')
    else:
        path = folder / 'annotations.json'
        sio.save_coco(sub, str(path))
    out = tmp_path / 'd.h5'
    s = ingest_sleap(path, out, target_size=128, **FAST)
    r = DatasetReader(out)
    d = r.read(np.arange(len(r)))
    assert len(r) == 6 and s.has_images and list(d['frame']) == [0, 0, 1, 1, 2, 2]
    assert r.read_images(0)[0].shape == (128, 128, 3)
    head = labels.labeled_frames[0].instances[0].numpy()[labels.skeleton.node_names.index('head')]
    stored = d['keypoints_2d'][:2, 0, r.keypoint_names.index('head')]
    expect = d['crop'][0, 0][:2, :2] @ head + d['crop'][0, 0][:2, 2]
    assert np.abs(stored - expect).sum(-1).min() < 1e-3     # one of the two flies


def test_cropped_video_keypoints_follow_the_crop(tmp_path):
    data = ('data', 'sleap_io_js_testdata', 'tests', 'data', 'slp')
    full, crop = tmp_path / 'full.h5', tmp_path / 'crop.h5'
    ingest_sleap(shared_path(*data, 'minimal_instance.pkg.slp'), full, **FAST)
    ingest_sleap(shared_path(*data, 'cropped_format_2_3.pkg.slp'), crop, **FAST)
    a, b = DatasetReader(full).read([0, 1]), DatasetReader(crop).read([0, 1])
    # the cropped video is the (64, 96)-(320, 288) window: stored points shift by it
    np.testing.assert_allclose(b['keypoints_2d'], a['keypoints_2d'] - [64, 96], atol=1e-4)
    np.testing.assert_allclose(b['crop'][0, 0][:2, 2], [-64, -96])
    img_a = DatasetReader(full).read_images(0)[0][96:288, 64:320].astype(int)
    img_b = DatasetReader(crop).read_images(0)[0].astype(int)
    assert img_b.shape == (192, 256, 3) and np.abs(img_a - img_b).mean() < 3


def test_joint_lookup_reorders_and_drops(tmp_path):
    lookup = tmp_path / 'lookup.csv'
    lookup.write_text('tail_tip,TailTip\nnose,Nose\nwhisker,\n')
    out = tmp_path / 'd.h5'
    ingest_sleap(session_dir(), out, max_frames=2, images=False, joint_lookup=lookup, **FAST)
    r = DatasetReader(out)
    assert r.keypoint_names == ['tail_tip', 'nose', 'whisker']
    d = r.read([0, 1])
    assert np.isnan(d['keypoints_2d'][:, :, 2]).all() and np.isfinite(d['keypoints_3d'][:, 1]).all()


# ---------------------------------------------------------------------------------- CLI
def test_cli_writes_dataset_and_reports_errors(tmp_path, capsys):
    from smilfit.cli.preprocess_sleap import main
    out = tmp_path / 'cli.h5'
    assert main([str(session_dir()), str(out), '--max-frames', '2', '--target-size', '64',
                 '--no-progress', '--units', 'mm']) == 0
    assert 'cli.h5: 2 samples' in capsys.readouterr().out
    assert len(DatasetReader(out)) == 2
    assert main([str(session_dir()), str(out), '--no-progress']) == 1
    err = capsys.readouterr().err
    assert err.startswith('preprocess_sleap: error: ') and 'already exists' in err
    with pytest.raises(SystemExit) as e:
        main(['--help'])
    assert e.value.code == 0 and '--crop-mode' in capsys.readouterr().out


def test_tool_script_error_has_no_traceback(tmp_path):
    out = tmp_path / 'o' / 'x.h5'
    out.parent.mkdir()
    proc = subprocess.run([sys.executable, str(REPO_ROOT / 'tools' / 'preprocess_sleap.py'),
                           str(tmp_path / 'missing_session'), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith('preprocess_sleap: error: ')
    assert 'missing_session: does not exist' in proc.stderr and 'Traceback' not in proc.stderr
    assert_nothing_written(out)


# ----------------------------------------------------------------------------- bad inputs
def make_session(root, skip=(), rename=None, files=None):
    """A session folder of symlinks to the shared one; ``files`` maps 'cam/name' (or a
    top-level name) to bytes (a derived file written here instead of the link)."""
    src = session_dir()
    root.mkdir(parents=True)
    files = dict(files or {})
    for name in ('calibration.toml', 'points3d.h5'):
        if name in files:
            (root / name).write_bytes(files.pop(name))
        else:
            os.symlink(src / name, root / name)
    for cam in CAMERAS:
        if cam in skip:
            continue
        cdir = root / (rename or {}).get(cam, cam)
        cdir.mkdir()
        for f in (src / cam).iterdir():
            key = f'{cam}/{f.suffix}'
            if key in files:
                if files[key] is not None:
                    (cdir / f.name).write_bytes(files[key])
            else:
                os.symlink(f, cdir / f.name)
    return root


def truncated(path, fraction=0.5):
    data = path.read_bytes()
    return data[:int(len(data) * fraction)]


def run_bad(tmp_path, input_path, match, **kwargs):
    out = tmp_path / 'out' / 'd.h5'
    out.parent.mkdir()
    with pytest.raises(DataIngestError, match=match):
        ingest_sleap(input_path, out, **FAST, **kwargs)
    assert_nothing_written(out)


def test_error_missing_camera_folder(tmp_path):
    s = make_session(tmp_path / 'sess', skip=['top'])
    run_bad(tmp_path, s, r"sess/top: missing camera folder for camera 'top'")


def test_error_camera_names_do_not_match_calibration(tmp_path):
    s = make_session(tmp_path / 'sess', rename={'top': 'overhead'})
    run_bad(tmp_path, s, r"calibration.toml: camera folder\(s\) \['overhead'\] .* are not "
                         r"cameras of the calibration")


def test_error_missing_video(tmp_path):
    s = make_session(tmp_path / 'sess', files={'mid/.mp4': None})
    run_bad(tmp_path, s, r'sess/mid: no video')


def test_error_missing_slp(tmp_path):
    s = make_session(tmp_path / 'sess', files={'side/.slp': None})
    run_bad(tmp_path, s, r'sess/side: no .slp labels file')


def test_error_frame_counts_disagree(tmp_path):
    s = make_session(tmp_path / 'sess', files={'top/.mp4': None})
    writer = cv2.VideoWriter(str(s / 'top' / 'short.mp4'), cv2.VideoWriter_fourcc(*'mp4v'), 30,
                             (1280, 1024))
    for _ in range(5):
        writer.write(np.zeros((1024, 1280, 3), np.uint8))
    writer.release()
    run_bad(tmp_path, s, r"frame counts of the views disagree: .*'top': 5")


def test_error_truncated_slp(tmp_path):
    slp = session_dir() / 'back' / 'minimal_back_proofread.slp'
    s = make_session(tmp_path / 'sess', files={'back/.slp': truncated(slp)})
    run_bad(tmp_path, s, r'minimal_back_proofread.slp: cannot read labels')


def test_error_corrupt_single_slp(tmp_path):
    clip = shared_path('data', 'sleap_flies_clip', 'clip.slp')
    bad = tmp_path / 'clip.slp'
    bad.write_bytes(truncated(clip, 0.3))
    run_bad(tmp_path, bad, r'clip.slp: cannot read labels .*corrupt, truncated')


def test_error_corrupt_calibration(tmp_path):
    s = make_session(tmp_path / 'sess', files={'calibration.toml': b'[cam_0\nname = "back"\n'})
    run_bad(tmp_path, s, r'calibration.toml: not valid TOML')
    s2 = tmp_path / 'b' / 'sess'
    calib = (session_dir() / 'calibration.toml').read_text().replace('rotation = [', 'rot = [', 1)
    make_session(s2, files={'calibration.toml': calib.encode()})
    run_bad(tmp_path / 'b', s2, r"calibration.toml \[cam_0\] is missing 'rotation'")


def test_error_truncated_points3d(tmp_path):
    p3d = session_dir() / 'points3d.h5'
    s = make_session(tmp_path / 'sess', files={'points3d.h5': truncated(p3d)})
    run_bad(tmp_path, s, r'points3d.h5: cannot read HDF5')


def test_error_corrupt_video(tmp_path):
    video = session_dir() / 'mid' / 'minimal_mid.mp4'
    s = make_session(tmp_path / 'sess', files={'mid/.mp4': truncated(video, 0.4)})
    run_bad(tmp_path, s, r'minimal_mid.mp4: ', target_size=64)


def test_error_while_decoding_leaves_nothing(tmp_path, monkeypatch):
    """A video that breaks mid-way (after samples were written) leaves no file either."""
    from smilfit.datasets.sleap_ingest import render as mod
    monkeypatch.setattr(mod, 'BLOCK_SAMPLES', 4)
    real_job, calls = mod._run_job, []

    def failing(args):
        calls.append(1)
        if len(calls) == 7:
            raise OSError(f'{args[0].path}: cannot decode frame 5 (truncated video?)')
        return real_job(args)

    monkeypatch.setattr(mod, '_run_job', failing)
    run_bad(tmp_path, session_dir(), r'minimal_(side|top).mp4: cannot decode frame 5',
            max_frames=12, target_size=32)


def test_error_lookup_names_missing_from_skeleton(tmp_path):
    lookup = tmp_path / 'lookup.csv'
    lookup.write_text('nose,Nose\nwhisker_tip,Whisker\npaw,Paw_L\n')
    run_bad(tmp_path, session_dir(),
            r"lookup.csv: data keypoints \['Whisker', 'Paw_L'\] are not in the skeleton",
            joint_lookup=lookup)


def test_error_all_keypoints_nan(tmp_path):
    import sleap_io as sio
    skeleton = sio.Skeleton(['a', 'b'])
    video = sio.Video(filename=str(tmp_path / 'absent.mp4'))
    frames = [sio.LabeledFrame(video=video, frame_idx=i, instances=[
        sio.Instance.from_numpy(np.full((2, 2), np.nan), skeleton=skeleton)]) for i in range(3)]
    path = tmp_path / 'nan.slp'
    sio.save_slp(sio.Labels(labeled_frames=frames, videos=[video], skeletons=[skeleton]),
                 str(path))
    out = tmp_path / 'out' / 'd.h5'
    out.parent.mkdir()
    with pytest.raises(DataIngestError, match='nan.slp: no sample has a visible keypoint'):
        ingest_sleap(path, out, **FAST)
    assert_nothing_written(out)


def test_error_misc_inputs(tmp_path):
    run_bad(tmp_path, tmp_path / 'nope', r'nope: does not exist')
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'cam').mkdir()
    (empty / 'cam' / 'x.slp').write_bytes(b'')
    out = tmp_path / 'o2' / 'd.h5'
    out.parent.mkdir()
    with pytest.raises(DataIngestError, match=r'empty/calibration.toml: missing'):
        ingest_sleap(empty, out, **FAST)
    assert_nothing_written(out)
    with pytest.raises(DataIngestError, match='bbox_crop needs a target size'):
        ingest_sleap(session_dir(), out, crop_mode='bbox_crop', **FAST)
    assert_nothing_written(out)
