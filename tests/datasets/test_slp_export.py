"""smilfit.datasets.slp_export: model keypoints as SLEAP predicted instances."""
import numpy as np
import pytest
import sleap_io as sio

from smilfit.datasets.slp_export import (SlpExportError, SlpPredictionWriter,
                                         write_predictions_slp)

NAMES = ['nose', 'neck', 'tail']


def test_round_trip_points_frames_instances_tracks(tmp_path):
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 100, size=(4, 2, 3, 2))
    kp[1, 0, 2] = np.nan                                  # one missing point
    valid = np.array([[1, 1], [1, 0], [1, 1], [0, 0]], bool)   # frame 3: nothing
    path = write_predictions_slp(tmp_path / 'p.slp', kp, NAMES,
                                 [dict(filename='cam.mp4', shape=(20, 64, 80, 1))],
                                 frame_indices=[0, 5, 7, 9], edges=[('nose', 'neck'), (1, 2)],
                                 tracks=True, instance_valid=valid)
    labels = sio.load_slp(str(path))
    assert [lf.frame_idx for lf in labels.labeled_frames] == [0, 5, 7]
    assert [len(lf.instances) for lf in labels.labeled_frames] == [2, 1, 2]
    assert labels.skeleton.node_names == NAMES
    assert [(e.source.name, e.destination.name) for e in labels.skeleton.edges] == \
        [('nose', 'neck'), ('neck', 'tail')]
    got = labels.labeled_frames[1].instances[0]
    np.testing.assert_allclose(got.numpy(), kp[1, 0], equal_nan=True)
    assert isinstance(got, sio.PredictedInstance)
    # Instance slot 1 of frame 7 keeps track 1 although slot 1 of frame 5 was dropped.
    assert labels.labeled_frames[2].instances[1].track.name == 'track_1'
    # Missing points have score 0, others 1; the instance score is their mean.
    np.testing.assert_allclose(got.score, 1.0)
    assert list(labels.video.shape) == [20, 64, 80, 1]
    assert not list(tmp_path.glob('.*partial*'))


def test_writer_multi_video_appends_instances(tmp_path):
    w = SlpPredictionWriter(NAMES, ['a.mp4', 'b.mp4'])
    w.add(0, 3, np.zeros((3, 2)))
    w.add(0, 3, np.ones((1, 3, 2)))                         # same frame: appended
    w.add(1, 3, np.full((3, 2), 2.0), point_scores=[0.5, 0.5, 1.0], scores=[0.9])
    assert (w.num_frames, w.num_instances) == (2, 3)
    labels = sio.load_slp(str(w.save(tmp_path / 'x.slp')))
    per_video = {(lf.video.filename, lf.frame_idx): len(lf.instances)
                 for lf in labels.labeled_frames}
    assert per_video == {('a.mp4', 3): 2, ('b.mp4', 3): 1}
    inst = [lf for lf in labels.labeled_frames if lf.video.filename == 'b.mp4'][0].instances[0]
    assert inst.score == pytest.approx(0.9)


@pytest.mark.parametrize('call, match', [
    (lambda w: w.add(0, 0, np.zeros((2, 2))), r'\(I, 3, 2\)'),
    (lambda w: w.add(2, 0, np.zeros((3, 2))), 'video index 2'),
    (lambda w: w.add(0, -1, np.zeros((3, 2))), 'frame_idx'),
])
def test_bad_inputs_name_the_problem(call, match):
    w = SlpPredictionWriter(NAMES, ['a.mp4'], tracks=None)
    with pytest.raises(SlpExportError, match=match):
        call(w)


def test_bad_skeleton_and_path(tmp_path):
    with pytest.raises(SlpExportError, match='repeats'):
        SlpPredictionWriter(['a', 'a'], ['v.mp4'])
    with pytest.raises(SlpExportError, match='unknown node'):
        SlpPredictionWriter(NAMES, ['v.mp4'], edges=[('nose', 'paw')])
    w = SlpPredictionWriter(NAMES, ['v.mp4'])
    w.add(0, 0, np.zeros((3, 2)))
    with pytest.raises(SlpExportError, match='.slp'):
        w.save(tmp_path / 'x.h5')
    w.save(tmp_path / 'x.slp')
    with pytest.raises(FileExistsError):
        w.save(tmp_path / 'x.slp', overwrite=False)


def test_videos_as_sleap_writes_them_named_tracks_and_image_folders(tmp_path):
    """A video file gets SLEAP's own MediaVideo fields (and its shape); an image folder
    becomes an image-sequence video of its files; tracks can carry names."""
    import cv2
    import h5py
    import json
    folder = tmp_path / 'frames'
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f'img{i:03d}.png'), np.zeros((16, 24, 3), np.uint8))
    w = SlpPredictionWriter(NAMES, [dict(filename='/videos/cam0.mp4', shape=(9, 64, 80, 3)),
                                    dict(filename=str(folder))], tracks=['mouse_a', 'mouse_b'])
    w.add(0, 2, np.ones((2, 3, 2)), track_ids=[1, 0])
    w.add(1, 1, np.ones((3, 2)), track_ids=[1])
    path = w.save(tmp_path / 'p.slp')
    with h5py.File(path) as f:
        backend = json.loads(f['videos_json'][0])['backend']
    assert backend == dict(filename='/videos/cam0.mp4', grayscale=False, bgr=True, dataset='',
                           input_format='', shape=[9, 64, 80, 3])
    labels = sio.load_slp(str(path), open_videos=False)
    assert labels.videos[1].filename == sorted(str(p) for p in folder.iterdir())
    assert [t.name for t in labels.tracks] == ['mouse_a', 'mouse_b']
    assert [i.track.name for i in labels.labeled_frames[0].instances] == ['mouse_b', 'mouse_a']
    assert labels.labeled_frames[1].instances[0].track.name == 'mouse_b'
    with pytest.raises(SlpExportError, match='track names repeat'):
        SlpPredictionWriter(NAMES, ['v.mp4'], tracks=['a', 'a'])
