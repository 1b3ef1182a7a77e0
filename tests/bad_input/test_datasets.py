"""Bad input: datasets edited or written by other tools, joint lookups with typos, stale
prepared data, interrupted ingestion.

Each table row: the case, what is done, and the message asserted (it names the file, the
field or the name at fault)."""
import os
import shutil
import signal
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest

from smilfit.apis.fitting import StaleDataError, prepare_data
from smilfit.datasets import generate_synthetic_dataset
from smilfit.datasets.hdf5_format import DatasetFormatError, DatasetReader, DatasetWriter
from smilfit.body_models.joint_lookup import JointLookupError
from smilfit.datasets.provenance import expected_source, sleap_source, write_source
from smilfit.handlers import Keypoint2DHandler

from ..conftest import shared_path, subprocess_env
from ..handlers.helpers import DATA_NAMES, toy_model


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp('bad_datasets') / 'good.h5'
    generate_synthetic_dataset(path, num_sessions=1, frames_per_session=4, num_views=3,
                               image_size=64, masks=False, progress=False)
    return path


def _copy(dataset, path):
    path.write_bytes(dataset.read_bytes())
    return path


def _replace(f, path, data):
    del f[path]
    f.create_dataset(path, data=data)


def _strings(values):
    return np.array(list(values), dtype=object)


# --- datasets checked on open -----------------------------------------------------------
# case, edit of the file, message fragment
OPEN_CASES = [
    ('cameras-for-fewer-views', lambda f: _replace(f, 'views/K', f['views/K'][:, :2]),
     r'field views/K has shape \(4, 2, 3, 3\), expected \(4, 3, 3, 3\)'),
    ('keypoint-count-confidence',
     lambda f: _replace(f, 'views/confidence', f['views/confidence'][:, :, :-1]),
     r'field views/confidence has shape \(4, 3, \d+\), expected \(4, 3, \d+\)'),
    ('keypoint-count-keypoints_2d',
     lambda f: _replace(f, 'views/keypoints_2d', f['views/keypoints_2d'][:, :, :-1]),
     r'field views/keypoints_2d has shape \(4, 3, \d+, 2\), expected \(4, 3, \d+, 2\)'),
    ('more-keypoint-names-than-points',
     lambda f: _replace(f, 'keypoint_names',
                        _strings(list(f['keypoint_names'].asstr()[()]) + ['extra'])),
     r'field views/keypoints_2d has shape \(4, 3, (\d+), 2\), expected \(4, 3, \d+, 2\) '
     r'.*K keypoints='),
    ('fewer-rows', lambda f: _replace(f, 'views/t', f['views/t'][:3]),
     r'field views/t has shape \(3, 3, 3\), expected \(4, 3, 3\)'),
    ('session-index-out-of-range',
     lambda f: _replace(f, 'samples/session', np.array([0, 0, 0, 5], np.int32)),
     r'field samples/session holds session index 5 \(sample 3\), but the file has 1 '
     r'sessions'),
    ('camera-names-for-two-sessions',
     lambda f: _replace(f, 'sessions/camera_names',
                        np.repeat(f['sessions/camera_names'][()], 2, axis=0)),
     r'sessions/camera_names has 2 rows for 1 sessions'),
]


@pytest.mark.parametrize('case, edit, message', OPEN_CASES, ids=[c[0] for c in OPEN_CASES])
def test_inconsistent_fields_are_named_on_open(tmp_path, dataset, case, edit, message):
    path = _copy(dataset, tmp_path / f'{case}.h5')
    with h5py.File(path, 'a') as f:
        edit(f)
    with pytest.raises(DatasetFormatError, match=message) as info:
        DatasetReader(path)
    assert str(path) in str(info.value)


def test_non_finite_cameras_are_reported_not_refused(tmp_path, dataset):
    """NaN/inf cameras: the file opens (the good samples stay usable) and
    non_finite_cameras() names the samples and cameras; an invalid view is not reported."""
    path = _copy(dataset, tmp_path / 'nan.h5')
    with h5py.File(path, 'a') as f:
        t, K, valid = f['views/t'][()], f['views/K'][()], f['views/valid'][()]
        t[1, 2, 0] = np.nan
        K[3, 0, 0, 0] = np.inf
        t[2, 1, 0] = np.nan
        valid[2, 1] = False  # padding views are never read
        for key, value in (('t', t), ('K', K), ('valid', valid)):
            f[f'views/{key}'][...] = value
    reader = DatasetReader(path)
    bad = reader.non_finite_cameras(block=3)  # blocks: the answer must not depend on them
    cams = reader.camera_names[0]
    assert bad.samples.tolist() == [1, 3] and bad.views.tolist() == [2, 0]
    assert bad.camera_names == [cams[2], cams[0]]
    assert bad.sample_indices.tolist() == [1, 3] and len(bad) == 2
    assert bad.describe() == (f'{path}: non-finite camera parameters (views/K, R, t or dist) '
                              f'in 2 view(s) of 2 sample(s): sample 1 camera {cams[2]}, '
                              f'sample 3 camera {cams[0]}')
    good = DatasetReader(dataset).non_finite_cameras()
    assert len(good) == 0 and good.describe().endswith('every camera is finite')


# --- joint lookups ----------------------------------------------------------------------
# The toy model's keypoints are head, neck, hip, paw, tip (on joints j1.. and a vertex); the
# data's are D_tip, D_head, D_unused, D_neck, D_paw, D_hip.
# case, lookup, message fragment
LOOKUP_CASES = [
    ('data-name-typo', {'head': 'D_haed', 'neck': 'D_neck'},
     r"head -> D_haed \(did you mean 'D_head'\?\)"),
    ('model-name-typo', {'Haed': 'D_head', 'neck': 'D_neck'},
     r"Haed -> D_head: no model joint or keypoint 'Haed' \(did you mean 'head'\?\)"),
    ('model-name-case', {'Head': 'D_head', 'neck': 'D_neck'},
     r"Head -> D_head: no model joint or keypoint 'Head' \(did you mean 'head'\?\)"),
    ('neither-name-exists', {'skul': 'Skull', 'neck': 'D_neck'},
     r'skul -> Skull: neither name exists'),
    # Used to reach the solver and fail there with "linalg.inv ... singular".
    ('names-of-another-dataset', {'head': 'Head', 'neck': 'Neck'},
     r"head -> Head \(did you mean 'D_head'\?\); neck -> Neck"),
]


@pytest.mark.parametrize('case, lookup, message', LOOKUP_CASES,
                         ids=[c[0] for c in LOOKUP_CASES])
def test_joint_lookup_names_that_do_not_exist_are_errors(case, lookup, message):
    handler = Keypoint2DHandler('kp2d')
    with pytest.raises(JointLookupError, match=message) as info:
        handler.setup(toy_model(), dict(keypoint_names=DATA_NAMES, joint_lookup=lookup))
    text = str(info.value)
    # Both sides' names are listed: the data's and every model joint and keypoint.
    assert f'Data keypoints: {DATA_NAMES}' in text
    assert "model joints and keypoints: ['j0'" in text and "'tip'" in text


def test_joint_lookup_may_name_joints_and_keypoints():
    """One lookup serves handlers reading keypoints and joints: an entry for a joint is
    skipped by a keypoint handler, not an error; an empty data name is allowed."""
    lookup = {'head': 'D_head', 'neck': '', 'j5': 'D_paw'}
    info = dict(keypoint_names=DATA_NAMES, joint_lookup=lookup)
    keypoints, joints = Keypoint2DHandler('kp'), Keypoint2DHandler('j', source='joints')
    keypoints.setup(toy_model(), info)
    joints.setup(toy_model(), info)
    assert keypoints.match.model_names == ['head'] and joints.match.model_names == ['j5']


# --- stale prepared data ----------------------------------------------------------------

def _session(root, name, content=b'labels v1'):
    folder = root / name
    folder.mkdir(exist_ok=True)
    (folder / 'labels.slp').write_bytes(content)
    return folder


# case, source recorded in the prepared file, what the config asks now (from the session
# folders a and b), error, message fragment
STALE_CASES = [
    ('other-session', lambda a, b: dict(sleap=dict(input=str(a))),
     lambda a, b: dict(sleap=dict(input=str(_session(b.parent, b.name, b'other labels')))),
     StaleDataError, r'does not hold what data.sleap asks for \(input files changed '
     r'\(1: labels.slp\)\)'),
    ('session-file-changed', lambda a, b: dict(sleap=dict(input=str(a))),
     lambda a, b: _session(a.parent, a.name, b'labels v2, proofread') and
     dict(sleap=dict(input=str(a))), StaleDataError,
     r'asks for \(input files changed \(1: labels.slp\)\)'),
    ('other-ingest-options', lambda a, b: dict(sleap=dict(input=str(a))),
     lambda a, b: dict(sleap=dict(input=str(a), max_frames=5)), StaleDataError,
     r'asks for \(options changed \(max_frames: None -> 5\)\)'),
    ('missing-input', lambda a, b: dict(sleap=dict(input=str(a))),
     lambda a, b: dict(sleap=dict(input=str(a.parent / 'no_such_session'))),
     FileNotFoundError, r'data.sleap.input .*no_such_session does not exist'),
    ('no-record', None, lambda a, b: dict(sleap=dict(input=str(a))), StaleDataError,
     r'asks for \(the file records no source\)'),
    ('other-synthetic-options', lambda a, b: dict(synthetic=dict(num_sessions=1)),
     lambda a, b: dict(synthetic=dict(num_sessions=2)), StaleDataError,
     r'does not hold what data.synthetic asks for \(options changed\)'),
]


@pytest.mark.parametrize('case, recorded, asked, error, message', STALE_CASES,
                         ids=[c[0] for c in STALE_CASES])
def test_stale_prepared_data_is_never_fitted(tmp_path, dataset, case, recorded, asked, error,
                                             message):
    """The prepared file is refused (the message says what changed and what to do) and
    left as it is: neither fitted nor silently replaced."""
    a, b = _session(tmp_path, 'session_a'), _session(tmp_path, 'session_b')
    path = _copy(dataset, tmp_path / 'prepared.h5')
    if recorded is not None:
        write_source(path, expected_source(recorded(a, b)))
    before = path.read_bytes()
    cfg = dict(data=dict(path=str(path), **asked(a, b)), body_model=None)
    with pytest.raises(error, match=message):
        prepare_data(cfg, progress=False)
    assert path.read_bytes() == before


def test_prepared_data_with_the_same_source_is_reused(tmp_path, dataset):
    a = _session(tmp_path, 'session_a')
    path = _copy(dataset, tmp_path / 'prepared.h5')
    write_source(path, expected_source(dict(sleap=dict(input=str(a)))))
    before = path.read_bytes()
    prepare_data(dict(data=dict(path=str(path), sleap=dict(input=str(a)))), progress=False)
    assert path.read_bytes() == before


def _recorded_as_prepared(path, data):
    """Write the source record ``tools/preprocess_sleap.py`` would store (with digests)."""
    record = sleap_source(data['sleap']['input'], {}, data['path'], digests=True)
    write_source(path, record)


def test_a_copied_session_is_the_same_input(tmp_path, dataset, capsys):
    """A session copied to another folder (the same bytes, new times) fits from the
    dataset prepared from the first copy, with a note; a changed file is still refused."""
    a = _session(tmp_path, 'session_a')
    (a / 'back').mkdir()
    (a / 'back' / 'video.mp4').write_bytes(b'frames' * 1000)
    path = _copy(dataset, tmp_path / 'prepared.h5')
    _recorded_as_prepared(path, dict(path=str(path), sleap=dict(input=str(a))))
    b = tmp_path / 'lab_share' / 'session_a'
    shutil.copytree(a, b, copy_function=shutil.copyfile)      # new times, same bytes
    os.utime(b / 'labels.slp', ns=(1, 1))
    before = path.read_bytes()
    prepare_data(dict(data=dict(path=str(path), sleap=dict(input=str(b)))), progress=False)
    assert path.read_bytes() == before
    err = capsys.readouterr().err
    assert 'the same files at another path' in err and str(a) in err and str(b) in err
    (b / 'back' / 'video.mp4').write_bytes(b'framez' * 1000)  # same size, other bytes
    with pytest.raises(StaleDataError, match=r'input files changed \(1: back/video.mp4\)'):
        prepare_data(dict(data=dict(path=str(path), sleap=dict(input=str(b)))),
                     progress=False)
    assert path.read_bytes() == before


def test_a_touched_file_with_the_same_bytes_is_unchanged(tmp_path, dataset, capsys):
    a = _session(tmp_path, 'session_a')
    path = _copy(dataset, tmp_path / 'prepared.h5')
    data = dict(path=str(path), sleap=dict(input=str(a)))
    _recorded_as_prepared(path, data)
    os.utime(a / 'labels.slp', ns=(1, 1))
    prepare_data(dict(data=data), progress=False)
    assert capsys.readouterr().err == ''            # same place: nothing to note
    (a / 'labels.slp').write_bytes(b'labels v2')   # same size, other bytes
    with pytest.raises(StaleDataError, match=r'input files changed \(1: labels.slp\)'):
        prepare_data(dict(data=data), progress=False)


def test_prepared_data_inside_the_session_folder_is_reused(tmp_path, dataset):
    """The prepared file (and its temporary files) are not part of the recorded input."""
    a = _session(tmp_path, 'session_a')
    path = a / 'prepared.h5'
    data = dict(path=str(path), sleap=dict(input=str(a)))
    record = expected_source(data)  # as prepare_data records it: before ingesting
    _copy(dataset, path)
    (a / 'prepared.h5.partial.ok').write_bytes(b'left by an interrupted run')
    write_source(path, record)
    prepare_data(dict(data=data), progress=False)
    (a / 'labels.slp').write_bytes(b'labels v2, proofread')
    with pytest.raises(StaleDataError, match=r'input files changed \(1: labels.slp\)'):
        prepare_data(dict(data=data), progress=False)


# --- interrupted writes -----------------------------------------------------------------

def _contents(path):
    """Every dataset of an HDF5 file and its root attributes but the creation time."""
    out = {}
    with h5py.File(path, 'r') as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                out[name] = ([bytes(x) for x in data.ravel()] if data.dtype == object
                             else data)
        f.visititems(visit)
        out['attrs'] = {k: str(v) for k, v in f.attrs.items() if k != 'created_at'}
    return out


def assert_same_file(a, b):
    left, right = _contents(a), _contents(b)
    assert sorted(left) == sorted(right)
    for key in left:
        if isinstance(left[key], np.ndarray):
            np.testing.assert_array_equal(left[key], right[key], err_msg=key)
        else:
            assert left[key] == right[key], key


BATCHES = 6


def _batch(i, n=3, C=2, K=3):
    """Batch ``i`` of the test writer: distinct values in every kind of field."""
    rng = np.random.default_rng(i)
    return dict(session=np.zeros(n, np.int32), frame=np.arange(n * i, n * i + n),
                valid=rng.random((n, C)) > 0.2, confidence=np.ones((n, C, K), np.float32),
                keypoints_2d=rng.random((n, C, K, 2)).astype(np.float32) * 64,
                K=np.broadcast_to(np.eye(3), (n, C, 3, 3)).copy(), R=rng.random((n, C, 3, 3)),
                t=rng.random((n, C, 3)), image_size=np.full((n, C, 2), 64, np.int32),
                images=[[bytes(rng.integers(0, 255, 5, np.uint8)), b''] for _ in range(n)],
                params={'betas': rng.random((n, 4)).astype(np.float32)})


def write_dataset(out, every=0.0):
    """A resumable write of BATCHES batches (what the subprocesses below run)."""
    with DatasetWriter(out, keypoint_names=['a', 'b', 'c'], num_views=2, resume=True,
                       checkpoint_every_s=every) as w:
        w.add_session('s', ['cam0', 'cam1'], video_paths=['s/cam0.mp4', 's/cam1.mp4'])
        for i in range(BATCHES):
            w.add_samples(_batch(i))
        w.commit()


WRITER_SCRIPT = r'''
import os, signal, sys
import h5py

out, kill_at, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
# Testing seam: count HDF5 dataset writes and SIGKILL this process at write number kill_at
# (a kill at an arbitrary point, between or inside batches).
setitem, calls = h5py.Dataset.__setitem__, [0]
def counting(self, key, value):
    calls[0] += 1
    if calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return setitem(self, key, value)
h5py.Dataset.__setitem__ = counting
from tests.bad_input.test_datasets import write_dataset
write_dataset(out, every)
print('writes', calls[0])
'''


def _write(tmp_path, out, kill_at, every):
    script = tmp_path / 'writer.py'
    script.write_text(WRITER_SCRIPT)
    env = subprocess_env()
    return subprocess.run([sys.executable, str(script), str(out), str(kill_at), str(every)],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    """(the file an uninterrupted run writes, how many HDF5 dataset writes it makes)."""
    out = tmp_path_factory.mktemp('uninterrupted') / 'out.h5'
    setitem, calls = h5py.Dataset.__setitem__, [0]

    def counting(self, key, value):
        calls[0] += 1
        return setitem(self, key, value)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(h5py.Dataset, '__setitem__', counting)
        write_dataset(out)
    return out, calls[0]


# case, where the kill lands (fraction of the run's HDF5 writes), checkpoint interval,
# damage done to the partial file afterwards, warning expected when resuming
KILL_CASES = [
    ('before-any-checkpoint', 0.05, 1e9, None, 'has no usable checkpoint; starting again'),
    ('inside-a-batch', 0.55, 0.0, None, 'resuming from its last checkpoint'),
    ('partial-overwritten', 0.55, 0.0, lambda p: p.write_bytes(p.read_bytes()[:1000] +
                                                               b'\0' * 5000),
     'resuming from its last checkpoint'),
]


@pytest.mark.parametrize('case, where, every, damage, warning', KILL_CASES,
                         ids=[c[0] for c in KILL_CASES])
def test_write_killed_with_sigkill_resumes_to_the_uninterrupted_file(
        tmp_path, uninterrupted, case, where, every, damage, warning):
    """kill -9 anywhere: nothing exists under the output name (the run does not look
    finished), and a resumed run writes the file an uninterrupted run writes."""
    reference, writes = uninterrupted
    out = tmp_path / 'out.h5'
    killed = _write(tmp_path, out, kill_at=max(1, int(where * writes)), every=every)
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists() and (tmp_path / 'out.h5.partial').exists()
    if damage is not None:
        damage(tmp_path / 'out.h5.partial')
    with pytest.warns(UserWarning, match=warning):
        write_dataset(out)  # resumed (in this process: one interpreter start less)
    assert_same_file(out, reference)
    assert not list(tmp_path.glob('out.h5.partial*'))


def test_write_interrupted_inside_a_batch_keeps_whole_batches(tmp_path, uninterrupted,
                                                             monkeypatch):
    """Ctrl-C/SIGTERM between two fields of a batch: the kept partial file is cut back to
    the whole batches and marked consistent, and resuming completes it exactly."""
    reference, writes = uninterrupted
    out = tmp_path / 'out.h5'
    setitem, calls = h5py.Dataset.__setitem__, [0]

    def interrupt(self, key, value):
        calls[0] += 1
        if calls[0] == writes // 2:
            raise KeyboardInterrupt
        return setitem(self, key, value)

    monkeypatch.setattr(h5py.Dataset, '__setitem__', interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(out)
    monkeypatch.undo()
    with h5py.File(tmp_path / 'out.h5.partial', 'r') as f:
        assert f.attrs['partial_consistent'] and not f.attrs['complete']
        assert len({f[p].shape[0] for p in ('samples/session', 'views/K', 'views/images',
                                             'params/betas')}) == 1
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a cleanly kept partial is continued as it is
        write_dataset(out)
    assert_same_file(out, reference)


# --- interrupted preprocessing (tools/preprocess_sleap.py) -------------------------------

PAUSE_SCRIPT = r'''
import sys, time
from smilfit.datasets.hdf5_format import DatasetWriter
# Testing seam: pause after the first block of samples, so the test can signal this
# process at a known point of the run.
add = DatasetWriter.add_samples
def add_then_pause(self, samples):
    n = add(self, samples)
    print('wrote a block', flush=True)
    time.sleep(120)
    return n
DatasetWriter.add_samples = add_then_pause
from smilfit.cli.preprocess_sleap import main
raise SystemExit(main(sys.argv[1:]))
'''


def _preprocess_args(out):
    session = shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')
    return [str(session), str(out), '--target-size', '32', '--no-progress']


@pytest.fixture(scope='module')
def preprocessed(tmp_path_factory):
    """The output of an uninterrupted tools/preprocess_sleap.py run."""
    from smilfit.cli.preprocess_sleap import main
    out = tmp_path_factory.mktemp('preprocessed') / 'out.h5'
    assert main(_preprocess_args(out)) == 0
    assert len(DatasetReader(out)) > 64  # more than one block: the pause is mid-run
    return out


def _signal_after_first_block(tmp_path, args, sig):
    script = tmp_path / 'pause.py'
    script.write_text(PAUSE_SCRIPT)
    env = subprocess_env()
    proc = subprocess.Popen([sys.executable, str(script)] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.startswith('wrote a block'):
                break
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


@pytest.mark.parametrize('resume', [False, True], ids=['plain', 'resume'])
def test_preprocessing_sigterm_says_interrupted(tmp_path, preprocessed, resume):
    """SIGTERM (as Ctrl-C): 'interrupted', a non-zero exit, no output file (it used to print
    an AttributeError about concurrent.futures.process); with --resume the kept partial
    file is continued to the file an uninterrupted run writes."""
    from smilfit.cli.preprocess_sleap import main
    out = tmp_path / 'out.h5'
    args = _preprocess_args(out) + (['--resume'] if resume else [])
    rc, err = _signal_after_first_block(tmp_path, args, signal.SIGTERM)
    kept = ' (partial file kept for --resume)' if resume else ''
    assert rc == 130 and f'preprocess_sleap: interrupted, nothing written{kept}' in err
    assert 'Traceback' not in err and 'AttributeError' not in err
    assert not out.exists()
    assert (tmp_path / 'out.h5.partial').exists() == resume
    if resume:
        assert main(args) == 0
        assert_same_file(out, preprocessed)


def test_preprocessing_killed_with_sigkill_resumes(tmp_path, preprocessed):
    """kill -9 after a checkpoint: no output file, and --resume continues from the
    checkpoint to the file an uninterrupted run writes."""
    from smilfit.cli.preprocess_sleap import main
    out = tmp_path / 'out.h5'
    args = _preprocess_args(out) + ['--resume', '--checkpoint-every', '0']
    rc, _ = _signal_after_first_block(tmp_path, args, signal.SIGKILL)
    assert rc == -signal.SIGKILL and not out.exists()
    assert (tmp_path / 'out.h5.partial.ok').exists()
    with pytest.warns(UserWarning, match='resuming from its last checkpoint'):
        assert main(args) == 0
    assert_same_file(out, preprocessed)
    assert not list(tmp_path.glob('out.h5.partial*'))


def test_video_paths_and_skeleton_round_trip_and_are_checked(tmp_path):
    out = tmp_path / 'd.h5'
    with DatasetWriter(out, keypoint_names=['a', 'b', 'c'], num_views=2) as w:
        w.add_session('s0', ['cam0', 'cam1'], video_paths=['/v/cam0.mp4'])
        w.add_session('s1', ['cam0'], video_shapes=[(120, 1024, 1280)],
                      video_dist=[(-0.3, 0.1, 0, 0, 0)])
        with pytest.raises(DatasetFormatError, match=r"add_session\('s2'\): video_shape has "
                                                     r'3 rows for 2 views'):
            w.add_session('s2', ['cam0'], video_shapes=[(1, 2, 3)] * 3)
        with pytest.raises(DatasetFormatError, match=r'video_dist must be one row of 5 '
                                                     r'numbers per camera, got shape \(1, 4\)'):
            w.add_session('s2', ['cam0'], video_dist=[(0.1, 0, 0, 0)])
        with pytest.raises(DatasetFormatError, match=r'skeleton edges index out of range '
                           r'for 3 keypoints'):
            w.set_skeleton(edges=[(0, 3)])
        w.set_skeleton(edges=[(0, 1), (1, 2)], symmetries=[(0, 2)])
        w.commit()
    reader = DatasetReader(out)
    assert reader.video_paths == [['/v/cam0.mp4', ''], ['', '']]
    assert reader.video_shapes.tolist() == [[[0, 0, 0]] * 2, [[120, 1024, 1280], [0, 0, 0]]]
    np.testing.assert_allclose(reader.video_dist[:, 0], [[0] * 5, [-0.3, 0.1, 0, 0, 0]])
    assert reader.skeleton_edges == [(0, 1), (1, 2)] and reader.skeleton_symmetries == [(0, 2)]
