"""Overlays: exact blending, keypoints at their pixels in their error colours, grids."""
import numpy as np
import pytest

from smilfit.visualization.overlay import (draw_keypoints, error_colours, grey_image,
                                           overlay_mesh, view_grid)
from smilfit.visualization.zbuffer import MeshRender


def test_overlay_mesh_blends_inside_the_mask_only():
    image = np.full((6, 8, 3), 100, dtype=np.uint8)
    mesh = np.zeros((6, 8, 3), dtype=np.uint8)
    mesh[..., 0] = 200
    mask = np.zeros((6, 8), dtype=bool)
    mask[2:4, 3:6] = True
    render = MeshRender(image=mesh, mask=mask, depth=np.full((6, 8), np.inf))
    out = overlay_mesh(image, render, alpha=0.25)
    # 0.75 * 100 + 0.25 * 200 = 125 (red), 0.75 * 100 + 0 = 75 (green, blue).
    assert (out[mask] == [125, 75, 75]).all()
    assert (out[~mask] == 100).all()
    assert (image == 100).all()                                  # input untouched
    np.testing.assert_array_equal(overlay_mesh(image, (mesh, mask), 1.0)[mask], mesh[mask])
    with pytest.raises(ValueError, match='alpha'):
        overlay_mesh(image, render, 1.5)
    with pytest.raises(ValueError, match='do not match'):
        overlay_mesh(image[:5], render)


def test_error_colours_follow_the_colormap_scale():
    c = error_colours(np.array([0.0, 5.0, 10.0, 50.0, np.nan]), scale_px=10.0)
    import matplotlib
    cmap = matplotlib.colormaps['RdYlGn_r']
    for k, x in enumerate([0.0, 0.5, 1.0, 1.0]):                 # clipped beyond the scale
        np.testing.assert_array_equal(c[k], np.rint(255 * np.asarray(cmap(x)[:3])))
    assert (c[4] == 255).all()                                   # NaN: white
    assert c[0, 1] > c[0, 0] and c[2, 0] > c[2, 1]               # green at 0, red at scale


def test_keypoints_are_drawn_at_their_pixels_in_their_error_colours():
    image = grey_image(40, 50, level=0)
    observed = np.array([[10.0, 12.0], [30.2, 20.4], [np.nan, np.nan], [40.0, 30.0]])
    fitted = np.array([[10.0, 12.0], [36.2, 28.4], [20.0, 30.0], [np.nan, np.nan]])
    out = draw_keypoints(image, observed, fitted, error_scale_px=10.0, radius=2,
                         error_lines=False, scale_bar=False)
    expected = error_colours(np.array([0.0, 10.0]), 10.0)        # errors 0 px and 10 px
    np.testing.assert_array_equal(out[12, 10], expected[0])      # row = y, column = x
    np.testing.assert_array_equal(out[28, 36], expected[1])      # (36.2, 28.4) -> (28, 36)
    np.testing.assert_array_equal(out[30, 20], (80, 160, 255))   # no observation
    # The observed-only point is a ring: its centre stays dark, the ring is drawn.
    assert (out[30, 40] == 0).all()
    assert out[28:33, 38:43].max() > 0
    assert (image == 0).all()
    # Observations alone are filled discs of the observed colour.
    alone = draw_keypoints(image, observed, None, observed_colour=(1, 2, 3))
    np.testing.assert_array_equal(alone[20, 30], (1, 2, 3))


def test_keypoint_skeleton_and_errors():
    image = grey_image(20, 40, level=0)
    pts = np.array([[5.0, 10.0], [35.0, 10.0]])
    out = draw_keypoints(image, None, pts, skeleton=[(0, 1)], radius=1)
    assert (out[10, 15:25] > 0).all()                            # the bone between them
    with pytest.raises(ValueError, match='skeleton'):
        draw_keypoints(image, None, pts, skeleton=[(0, 2)])
    with pytest.raises(ValueError, match=r'fitted must be \(2, 2\)'):
        draw_keypoints(image, pts, pts[:1])
    with pytest.raises(ValueError, match='uint8'):
        draw_keypoints(image.astype(float), pts)


def test_view_grid_places_views_in_cells_with_labels():
    a = np.full((10, 12, 3), 50, dtype=np.uint8)
    b = np.full((8, 6, 3), 150, dtype=np.uint8)
    grid = view_grid([a, b, None], labels=['left', 'right', 'empty'], ncols=2, pad=3,
                     background=(1, 1, 1))
    banner = 18
    assert grid.shape == (2 * (10 + banner) + 3, 2 * 12 + 3, 3)
    np.testing.assert_array_equal(grid[banner:banner + 10, :12], a)
    np.testing.assert_array_equal(grid[banner:banner + 8, 15:21], b)
    assert (grid[banner + 8:banner + 10, 15:27] == 1).all()      # smaller view: padding
    assert (grid[2 * banner + 13:, :12] == 1).all()              # None: empty cell
    assert grid[:banner, :12].max() > 0                          # label text drawn
    no_labels = view_grid([a, a])
    assert no_labels.shape == (10, 12 * 2 + 4, 3)
    with pytest.raises(ValueError, match='labels'):
        view_grid([a], labels=['x', 'y'])
    with pytest.raises(ValueError, match='no images'):
        view_grid([])
