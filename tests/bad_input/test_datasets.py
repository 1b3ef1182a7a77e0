"""Bad input: prepared datasets edited or written by other tools, interrupted ingestion.

Each row: how the file is broken, and the message (naming the file and the field)."""
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from smilfit.datasets import generate_synthetic_dataset
from smilfit.datasets.hdf5_format import DatasetFormatError, DatasetReader

from ..conftest import shared_path


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp('bad_datasets') / 'good.h5'
    generate_synthetic_dataset(path, num_sessions=1, frames_per_session=4, num_views=3,
                               image_size=64, masks=False, progress=False)
    return path


def _replace(f, path, data):
    del f[path]
    f.create_dataset(path, data=data)


# case, edit of the file, message fragment
CASES = [
    ('cameras-for-fewer-views', lambda f: _replace(f, 'views/K', f['views/K'][:, :2]),
     r'field views/K has shape \(4, 2, 3, 3\), expected \(4, 3, 3, 3\)'),
    ('keypoint-count', lambda f: _replace(f, 'views/confidence', f['views/confidence'][:, :, :-1]),
     r'field views/confidence has shape \(4, 3, \d+\), expected \(4, 3, \d+\)'),
    ('fewer-rows', lambda f: _replace(f, 'views/t', f['views/t'][:3]),
     r'field views/t has shape \(3, 3, 3\), expected \(4, 3, 3\)'),
]


@pytest.mark.parametrize('case, edit, message', CASES, ids=[c[0] for c in CASES])
def test_inconsistent_fields_are_named_on_open(tmp_path, dataset, case, edit, message):
    path = tmp_path / f'{case}.h5'
    path.write_bytes(dataset.read_bytes())
    with h5py.File(path, 'a') as f:
        edit(f)
    with pytest.raises(DatasetFormatError, match=message) as info:
        DatasetReader(path)
    assert str(path) in str(info.value)


def test_interrupted_preprocessing_says_so(tmp_path, monkeypatch, capsys):
    """Ctrl-C or SIGTERM during ingestion: 'interrupted', a non-zero exit, no output file
    (it used to print an AttributeError about concurrent.futures.process)."""
    import smilfit.datasets.ingest_sleap as ingest
    from smilfit.cli.preprocess_sleap import main
    session = shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt('signal 15')
        yield  # a generator, as _render is

    monkeypatch.setattr(ingest, '_render', interrupted)
    out = tmp_path / 'out.h5'
    rc = main([str(session), str(out), '--max-frames', '2', '--no-progress'])
    err = capsys.readouterr().err
    assert rc == 130 and 'interrupted, nothing written' in err
    assert 'AttributeError' not in err and not out.exists()


WRITER_SCRIPT = r'''
import sys, time
import numpy as np
from smilfit.datasets.hdf5_format import DatasetWriter

def batch(start, n=2, C=2, K=3):
    return dict(session=np.zeros(n, np.int32), frame=np.arange(start, start + n),
                valid=np.ones((n, C), bool), keypoints_2d=np.zeros((n, C, K, 2), np.float32),
                confidence=np.ones((n, C, K), np.float32),
                K=np.broadcast_to(np.eye(3), (n, C, 3, 3)).copy(),
                R=np.broadcast_to(np.eye(3), (n, C, 3, 3)).copy(),
                t=np.zeros((n, C, 3)), image_size=np.full((n, C, 2), 64, np.int32))

out, batches, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with DatasetWriter(out, keypoint_names=['a', 'b', 'c'], num_views=2, resume=True,
                   checkpoint_every_s=0) as w:
    w.add_session('s', ['cam0', 'cam1'])
    for i in range(batches):
        w.add_samples(batch(2 * i))
        print('batch', i, flush=True)
        time.sleep(pause)
    w.commit()
'''


def _run_writer(tmp_path, out, batches, pause):
    script = tmp_path / 'writer.py'
    script.write_text(WRITER_SCRIPT)
    return subprocess.Popen([sys.executable, str(script), str(out), str(batches), str(pause)],
                            stdout=subprocess.PIPE, text=True)


def test_resumable_write_killed_with_sigkill_resumes(tmp_path):
    """kill -9 in the middle of a resumable write: the output does not exist (the run does
    not look finished), and resuming completes it with every sample exactly once."""
    out = tmp_path / 'out.h5'
    proc = _run_writer(tmp_path, out, batches=50, pause=0.05)
    for line in proc.stdout:
        if line.startswith('batch 3'):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not out.exists()
    # Whatever state the partial file is in (readable, or damaged mid-write), resuming works.
    done = _run_writer(tmp_path, out, batches=6, pause=0)
    done.communicate(timeout=120)
    assert done.returncode == 0
    reader = DatasetReader(out)
    frames = reader.read(np.arange(len(reader)), keys=['frame'])['frame']
    assert sorted(frames.tolist()) == list(range(12))
    assert not list(tmp_path.glob('out.h5.partial*'))


def test_damaged_partial_file_resumes_from_its_checkpoint(tmp_path):
    out = tmp_path / 'out.h5'
    first = _run_writer(tmp_path, out, batches=3, pause=0)
    first.communicate(timeout=120)
    # Make an unfinished run's state: the committed file becomes a partial + checkpoint,
    # then the partial is damaged as by a kill during an HDF5 metadata write.
    partial = tmp_path / 'out.h5.partial'
    out.rename(partial)
    (tmp_path / 'out.h5.partial.ok').write_bytes(partial.read_bytes())
    partial.write_bytes(partial.read_bytes()[:1000] + b'\0' * 5000)
    with pytest.warns(UserWarning, match='is damaged .* resuming from its last checkpoint'):
        from smilfit.datasets.hdf5_format import DatasetWriter
        with DatasetWriter(out, keypoint_names=['a', 'b', 'c'], num_views=2,
                           resume=True) as w:
            assert w.num_samples == 6
            w.commit()
    assert len(DatasetReader(out)) == 6


def test_video_paths_and_skeleton_round_trip_and_are_checked(tmp_path):
    from smilfit.datasets.hdf5_format import DatasetWriter
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
