"""The viewer in a real browser: headless Chromium (software WebGL) loads the page of
tools/view.py's server and of its HTML export; the screenshots must show the mesh where
the looked-through camera sees it, and the timeline must move it.

Skips where Chromium is not installed (.ci/run installs the Debian package)."""
from __future__ import annotations

import numpy as np
import pytest

from .viewer_helpers import find_chromium, live_screenshot, make_fit, screenshot

pytestmark = pytest.mark.skipif(find_chromium() is None, reason='chromium is not installed')
viser = pytest.importorskip('viser')

WINDOW = (1200, 500)    # the camera's square image fills the middle 500 x 500


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    from smilfit.visualization.scene import load_scene
    return load_scene(make_fit(tmp_path_factory.mktemp('viewer')))


def canvas_height(image: np.ndarray) -> int:
    """Rows of the 3D canvas: the window, less the embedded player's bar at the bottom
    (found by its one-pixel grey top border)."""
    rows = image[-80:].astype(np.int32)
    for y in range(len(rows) - 1, -1, -1):
        row = rows[y, 100:-100]
        if (np.abs(row - row[0]).max() < 3) and 200 < row[0].mean() < 245:
            return image.shape[0] - 80 + y
    return image.shape[0]


def expected_box(scene, frame: int, camera: int = 0, height: int = WINDOW[1]) -> np.ndarray:
    """Screen box (x0, y0, x1, y1) of the mesh's vertices projected by the dataset camera,
    mapped to a canvas of ``height`` rows as the viewer's camera (same vertical field of
    view) sees it."""
    import torch

    from smilfit.cameras import project_points
    cams = scene.cameras
    verts = torch.as_tensor(scene.vertices[frame, 0], dtype=torch.float64)
    uv = project_points(verts, *(torch.as_tensor(a[frame, camera], dtype=torch.float64)
                                 for a in (cams.K, cams.R, cams.t))).numpy()
    w, h = cams.image_size[frame, camera]
    s = height / h
    x = (uv[:, 0] - w / 2) * s + WINDOW[0] / 2
    y = (uv[:, 1] - h / 2) * s + height / 2
    return np.array([x.min(), y.min(), x.max(), y.max()])


def mesh_mask(image: np.ndarray, height: int = WINDOW[1]) -> np.ndarray:
    """Pixels of the (blue, shaded) mesh in the camera's square of the canvas; the control
    panel with its blue buttons floats at the right, outside it."""
    rgb = image.astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mask = (b > 80) & (b - r > 40) & (b - g > 15)
    x0 = (WINDOW[0] - height) // 2
    mask[:, :x0] = False
    mask[:, x0 + height:] = False
    mask[height:] = False
    return mask


def box_of(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    assert len(xs) > 200, f'only {len(xs)} mesh pixels in the screenshot'
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], float)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = np.maximum(a[:2], b[:2])
    x1, y1 = np.minimum(a[2:], b[2:])
    inter = max(x1 - x0, 0) * max(y1 - y0, 0)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def shows_at(box: np.ndarray):
    """Whether a screenshot shows the mesh where ``box`` expects it (the assertions'
    test, to take a live page's screenshot again while the scene is still on its way)."""
    def shows(image: np.ndarray) -> bool:
        mask = mesh_mask(image)
        return mask.sum() > 200 and iou(box_of(mask), box) > 0.7
    return shows


def test_live_viewer_draws_the_mesh_where_the_camera_sees_it_and_the_timeline_moves_it(
        scene, tmp_path):
    from smilfit.visualization.viewer import SceneViewer, free_port
    # The frame whose mesh is farthest (on screen) from frame 0's: the move to check.
    boxes = [expected_box(scene, f) for f in range(scene.num_frames)]
    centres = np.array([(b[:2] + b[2:]) / 2 for b in boxes])
    other = int(np.argmax(np.linalg.norm(centres - centres[0], axis=1)))
    assert np.linalg.norm(centres[other] - centres[0]) > 20

    port = free_port()
    server = viser.ViserServer(host='127.0.0.1', port=port, verbose=False)
    viewer = SceneViewer(scene, server, view_camera=0, frame_animal=False)
    try:
        url = f'http://127.0.0.1:{port}/'
        first = live_screenshot(url, tmp_path / 'frame0.png', shows_at(boxes[0]), WINDOW)
        viewer.set_frame(other)              # what the timeline slider calls
        second = live_screenshot(url, tmp_path / 'frame1.png', shows_at(boxes[other]),
                                 WINDOW)
    finally:
        viewer.close()
        server.stop()
    got0, got1 = box_of(mesh_mask(first)), box_of(mesh_mask(second))
    assert iou(got0, boxes[0]) > 0.7, (got0, boxes[0])
    assert iou(got1, boxes[other]) > 0.7, (got1, boxes[other])
    moved = (got1[:2] + got1[2:]) / 2 - (got0[:2] + got0[2:]) / 2
    want = centres[other] - centres[0]
    assert np.linalg.norm(moved - want) < 0.25 * np.linalg.norm(want) + 5, (moved, want)


def test_html_export_plays_offline_from_a_file(scene, tmp_path):
    """The exported page loads from file:// (no server, no network) and draws the mesh
    where camera 0 sees the first frame (one frame: no playback timing in the test)."""
    from smilfit.visualization.viewer import export_html
    page = export_html(scene.select_frames([0]), tmp_path / 'scene.html', frame_animal=False)
    text = page.read_text()
    assert 'http://' not in text.replace('http://www.w3.org', '')
    assert '__VISER_EMBED_DATA__' in text
    image = screenshot(page.resolve().as_uri(), tmp_path / 'export.png', WINDOW)
    height = canvas_height(image)
    assert 400 < height < WINDOW[1]          # the player's bar is there
    got, want = box_of(mesh_mask(image, height)), expected_box(scene, 0, height=height)
    assert iou(got, want) > 0.7, (got, want)


def wide_angle(scene, factor: float = 3.0):
    """The scene seen through lenses ``factor`` times wider: the animal small in view."""
    import dataclasses
    cams = scene.cameras
    K = cams.K.copy()
    K[..., 0, 0] /= factor
    K[..., 1, 1] /= factor
    return dataclasses.replace(scene, cameras=dataclasses.replace(cams, K=K))


def test_both_pages_open_framed_on_the_animal(scene, tmp_path):
    """By default the live page and the exported one start framed on the first frame's
    animal: seen through a wide lens it is small, framed it is large on screen and
    centred."""
    from smilfit.visualization.viewer import SceneViewer, export_html, free_port
    scene = wide_angle(scene)
    own = expected_box(scene, 0)
    port = free_port()
    server = viser.ViserServer(host='127.0.0.1', port=port, verbose=False)
    viewer = SceneViewer(scene, server, view_camera=0)
    try:
        live = box_of(mesh_mask(live_screenshot(
            f'http://127.0.0.1:{port}/', tmp_path / 'live.png',
            lambda image: mesh_mask(image).sum() > 200, WINDOW)))
    finally:
        viewer.close()
        server.stop()
    page = export_html(scene.select_frames([0]), tmp_path / 'scene.html')
    image = screenshot(page.resolve().as_uri(), tmp_path / 'export.png', WINDOW)
    height = canvas_height(image)
    exported = box_of(mesh_mask(image, height))
    for got, rows in ((live, WINDOW[1]), (exported, height)):
        size = max(got[2] - got[0], got[3] - got[1])
        assert size > 2 * max(own[2] - own[0], own[3] - own[1]) * rows / WINDOW[1]
        centre = (got[:2] + got[2:]) / 2
        assert np.abs(centre - (WINDOW[0] / 2, rows / 2)).max() < 0.15 * rows, (got, rows)
