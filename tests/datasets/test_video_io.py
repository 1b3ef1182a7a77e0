"""smilfit.datasets.video_io: the one OpenCV frame reader (ingestion, inference, tools)."""
import pickle

import cv2
import numpy as np
import pytest

from smilfit.datasets.video_io import FrameReader, VideoInfo, probe_video

N, W, H, FPS = 40, 64, 48, 12.0


@pytest.fixture(scope='module')
def video(tmp_path_factory):
    """An MJPG .avi (every frame a key frame, so seeks land exactly) whose frame i shows
    the number i in its colour and position."""
    path = tmp_path_factory.mktemp('video') / 'clip.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), FPS, (W, H))
    for i in range(N):
        img = np.full((H, W, 3), (10, 5 * i, 250 - 5 * i), np.uint8)
        cv2.rectangle(img, (i, 10), (i + 12, 30), (255, 255, 255), -1)
        writer.write(img)
    writer.release()
    return path


@pytest.fixture(scope='module')
def reference(video):
    """Every frame, decoded front to back with a bare VideoCapture."""
    cap, frames = cv2.VideoCapture(str(video)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == N
    return frames


def test_probe(video):
    assert probe_video(video) == VideoInfo(num_frames=N, size=(W, H), fps=FPS)


def test_probe_names_the_file_it_cannot_open(tmp_path):
    bad = tmp_path / 'not_a_video.mp4'
    bad.write_bytes(b'\x00' * 4096)
    with pytest.raises(OSError, match='not_a_video.mp4: OpenCV cannot open'):
        probe_video(bad)
    with pytest.raises(OSError, match='missing.mp4'):
        probe_video(tmp_path / 'missing.mp4')


@pytest.mark.parametrize('order', [
    list(range(N)),                    # sequential
    list(range(0, N, 3)),              # short forward gaps: read through
    [0, 30, 31, 5, 5, 39, 2],          # long jumps forward, backwards, repeats
])
@pytest.mark.parametrize('seek_gap', [0, 4, 48])
def test_frames_equal_a_front_to_back_decode(video, reference, order, seek_gap):
    with FrameReader(video, seek_gap=seek_gap) as reader:
        for i in order:
            frame = reader.read(i)
            assert frame.shape == (H, W, 3) and frame.dtype == np.uint8
            np.testing.assert_array_equal(frame, reference[i], err_msg=f'frame {i}')
        np.testing.assert_array_equal(reader.read_rgb(order[0]), reference[order[0]][..., ::-1])


def test_past_the_end_names_file_and_frame(video):
    reader = FrameReader(video)
    with pytest.raises(OSError, match=rf'clip.avi: cannot decode frame {N}'):
        reader.read(N + 3)
    reader.close()


def test_opens_lazily_and_again_after_close(video, reference):
    """A reader made in one process reads in another (dataloader/ingestion workers)."""
    reader = pickle.loads(pickle.dumps(FrameReader(video)))
    np.testing.assert_array_equal(reader.read(7), reference[7])
    reader.close()
    np.testing.assert_array_equal(reader.read(3), reference[3])
    reader.close()
