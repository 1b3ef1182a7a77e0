"""Videos: atomic mp4 files with the right frames; a fit video shows the mesh where the camera
puts it."""
import imageio.v2 as iio
import numpy as np
import pytest

from smilfit.visualization.video import VideoWriter, render_fit_frame, render_fit_video
from smilfit.renderers.zbuffer import rasterize


def read_video(path):
    with iio.get_reader(str(path)) as reader:
        return np.stack([frame for frame in reader])   # not list(): its length is inf


def test_video_writer_writes_all_frames(tmp_path):
    path = tmp_path / 'out' / 'clip.mp4'
    levels = [30, 120, 220]
    with VideoWriter(path, fps=10) as video:
        for level in levels:
            video.write(np.full((21, 33, 3), level, dtype=np.uint8))   # odd sizes: padded
    frames = read_video(path)
    assert frames.shape == (3, 22, 34, 3)
    for frame, level in zip(frames, levels):
        assert abs(float(np.median(frame[:21, :33])) - level) <= 3      # lossy, but close
    assert not video.tmp_path.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ['clip.mp4']


def test_video_writer_leaves_no_file_on_error(tmp_path):
    path = tmp_path / 'clip.mp4'
    with pytest.raises(ValueError, match='frame 1'):
        with VideoWriter(path) as video:
            video.write(np.zeros((16, 16, 3), dtype=np.uint8))
            video.write(np.zeros((8, 16, 3), dtype=np.uint8))          # size changed
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match='no frames'):
        with VideoWriter(path):
            pass
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match='.mp4'):
        VideoWriter(tmp_path / 'clip.avi')


def test_two_writers_of_one_video_encode_into_files_of_their_own(tmp_path):
    """Two renders of one video at once (two jobs, one output folder): neither writes
    into the other's file, and the target is one of them whole."""
    path = tmp_path / 'clip.mp4'
    first, second = VideoWriter(path, fps=10), VideoWriter(path, fps=10)
    for _ in range(2):
        first.write(np.full((16, 16, 3), 40, dtype=np.uint8))
        second.write(np.full((16, 16, 3), 200, dtype=np.uint8))
    assert first.tmp_path != second.tmp_path
    first.close()
    assert abs(float(np.median(read_video(path))) - 40) <= 3
    second.close()
    frames = read_video(path)
    assert frames.shape[0] == 2 and abs(float(np.median(frames)) - 200) <= 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ['clip.mp4']


def test_video_writer_cv2_backend(tmp_path):
    path = tmp_path / 'clip.mp4'
    with VideoWriter(path, fps=5, backend='cv2') as video:
        for _ in range(2):
            video.write(np.full((16, 16, 3), 128, dtype=np.uint8))
    assert read_video(path).shape[0] == 2


def _scene():
    """A triangle seen by two cameras (the second shifted right), at depth 4."""
    verts = np.array([[-1.0, -0.8, 4.0], [1.2, -0.6, 4.0], [0.0, 1.0, 4.0]])
    K = np.array([[40.0, 0, 31.5], [0, 40.0, 23.5], [0, 0, 1]])
    R = np.stack([np.eye(3)] * 2)
    t = np.array([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0]])
    return verts, np.array([[0, 1, 2]]), np.stack([K] * 2), R, t


def test_fit_video_shows_the_mesh_where_the_camera_says(tmp_path):
    verts, faces, K, R, t = _scene()
    T = 4
    motion = np.zeros((T, 1, 3))
    motion[:, 0, 0] = np.linspace(0, 0.3, T)                    # moves right over time
    V = verts[None] + motion
    path = render_fit_video(tmp_path / 'fit.mp4', V, faces, dict(K=K[None], R=R[None],
                            t=t[None]), image_size=(64, 48), camera_names=['a', 'b'], ncols=2,
                            mesh_colour=(1.0, 1.0, 1.0), alpha=1.0, progress=False)
    frames = read_video(path)
    assert frames.shape[0] == T
    banner, pad = 18, 4
    for ti in range(T):
        for c in range(2):
            mask = rasterize(V[ti], faces, K[c], R[c], t[c], height=48, width=64).mask.numpy()
            x0 = c * (64 + pad)
            tile = frames[ti, banner:banner + 48, x0:x0 + 64].astype(float).mean(-1)
            inner = mask & np.roll(mask, 2, 0) & np.roll(mask, -2, 0) \
                & np.roll(mask, 2, 1) & np.roll(mask, -2, 1)           # away from the edges
            outer = ~(mask | np.roll(mask, 2, 0) | np.roll(mask, -2, 0) | np.roll(mask, 2, 1)
                      | np.roll(mask, -2, 1))
            assert inner.sum() > 20
            assert tile[inner].mean() > 200                     # bright mesh
            assert abs(tile[outer].mean() - 96) < 8              # grey background


def test_fit_frame_draws_keypoints_and_uses_images():
    verts, faces, K, R, t = _scene()
    images = [np.zeros((48, 64, 3), np.uint8), None]
    observed = np.full((2, 1, 2), np.nan)
    observed[0, 0] = (10.0, 10.0)
    fitted = observed + 6.0
    grid = render_fit_frame(None, None, K, R, t, None, images, np.array([[64, 48]] * 2),
                            observed, fitted, ncols=2, error_scale_px=20.0)
    assert grid.shape == (18 + 48, 64 * 2 + 4, 3)
    tile0 = grid[18:, :64]
    assert (tile0[16, 16] > 0).any()                          # fitted point at (16, 16)
    assert abs(float(grid[18 + 40, 64 + 4 + 40].mean()) - 96) < 1   # grey second view
    # An empty camera slot (image size 0 x 0) is an empty cell.
    grid = render_fit_frame(None, None, K, R, t, None, None, np.array([[64, 48], [0, 0]]),
                            ncols=2)
    assert (grid[18:, 64 + 4:] == 0).all()
    with pytest.raises(ValueError, match='no image and no image_size'):
        render_fit_frame(None, None, K, R, t, None, [None, None])


def test_fit_video_checks_its_inputs(tmp_path):
    verts, faces, K, R, t = _scene()
    cams = dict(K=K[None], R=R[None], t=t[None])
    with pytest.raises(ValueError, match='number of frames'):
        render_fit_video(tmp_path / 'x.mp4', verts[None].repeat(3, 0), faces, cams,
                         image_size=(64, 48), keypoints_fitted=np.zeros((2, 2, 1, 2)),
                         progress=False)
    with pytest.raises(ValueError, match='leading dimension'):
        render_fit_video(tmp_path / 'x.mp4', verts[None].repeat(3, 0), faces,
                         dict(K=K[None].repeat(2, 0), R=R[None], t=t[None]),
                         image_size=(64, 48), progress=False)
    with pytest.raises(ValueError, match='frames gave 1 entries'):
        render_fit_video(tmp_path / 'x.mp4', verts[None].repeat(2, 0), faces, cams,
                         frames=[None], image_size=(64, 48), progress=False)
    assert list(tmp_path.iterdir()) == []
