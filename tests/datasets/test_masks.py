"""Mask loading: COCO RLE (compressed and uncompressed), polygons, PNG files, HDF5 datasets.

Expected values are worked out by hand from the RLE definition (runs of 0s then 1s in
column-major order; compressed counts as 5-bit groups + 48, deltas from the count two
before for the 4th count on), and the real StanfordExtra masks are checked against their
own boxes and keypoints and re-encoded to the identical strings.
"""
import json

import cv2
import numpy as np
import pytest

from smilfit.datasets.hdf5_format import DatasetWriter, encode_mask
from smilfit.datasets.masks import (MaskFormatError, counts_to_rle_string, decode_segmentation,
                                    load_mask_png, masks_from_hdf5, polygons_to_mask,
                                    rle_decode, rle_encode, rle_string_to_counts,
                                    save_mask_png)

from tests.conftest import shared_path


def test_compressed_counts_by_hand():
    # small counts are one character each: chr(48 + c)
    assert rle_string_to_counts('324').tolist() == [3, 2, 4]
    # 4th count 40 is stored as 40 - counts[1] = 39 = 0b1_00111: groups 7 (+0x20 more), 1
    assert rle_string_to_counts('111W1').tolist() == [1, 1, 1, 40]
    # 4th count 2 stored as 2 - 5 = -3: one group 29 (sign bit 0x10 set) -> 'M'
    assert rle_string_to_counts('151M').tolist() == [1, 5, 1, 2]
    assert counts_to_rle_string([1, 1, 1, 40]) == '111W1'
    assert counts_to_rle_string([1, 5, 1, 2]) == '151M'


def test_decode_column_major():
    # [3, 2, 4] on 3 x 3: column 0 empty, column 1 rows 0-1 set, rest empty
    expected = np.array([[0, 1, 0], [0, 1, 0], [0, 0, 0]], bool)
    np.testing.assert_array_equal(rle_decode('324', 3, 3), expected)
    np.testing.assert_array_equal(rle_decode({'size': [3, 3], 'counts': [3, 2, 4]}), expected)
    np.testing.assert_array_equal(rle_decode({'size': [3, 3], 'counts': b'324'}), expected)
    # [1, 5, 1, 2]: flat (column-major) 0 11111 0 11
    expected = np.array([[0, 1, 0], [1, 1, 1], [1, 1, 1]], bool)
    np.testing.assert_array_equal(rle_decode('151M', 3, 3), expected)
    # non-square: H=2, W=3, counts [1, 4, 1] -> columns (0,1), (1,1), (1,0)
    np.testing.assert_array_equal(rle_decode([1, 4, 1], 2, 3),
                                  np.array([[0, 1, 1], [1, 1, 0]], bool))


def test_encode_round_trip_random():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (5, 7), (31, 17), (64, 48)]:
        mask = rng.random(shape) > 0.6
        mask[0, 0] = True  # starts with a 1-run: counts begin with 0
        rle = rle_encode(mask)
        assert rle['counts'][0] == 0 and sum(rle['counts']) == mask.size
        np.testing.assert_array_equal(rle_decode(rle), mask)
        s = counts_to_rle_string(rle['counts'])
        np.testing.assert_array_equal(rle_decode(s, *shape), mask)
        assert rle_string_to_counts(s).tolist() == rle['counts']


def test_rle_errors_name_the_problem():
    with pytest.raises(MaskFormatError, match='cover 9 pixels'):
        rle_decode('324', 2, 3)
    with pytest.raises(MaskFormatError, match='size'):
        rle_decode('324')
    with pytest.raises(MaskFormatError, match='truncated'):
        rle_string_to_counts('11W')
    with pytest.raises(MaskFormatError, match='outside the code range'):
        rle_string_to_counts('12~')
    with pytest.raises(MaskFormatError, match='disagrees'):
        rle_decode({'size': [3, 3], 'counts': '324'}, 4, 4)
    with pytest.raises(MaskFormatError, match='>= 0'):
        rle_decode([3, -1, 7], 3, 3)


def test_polygons_and_dispatch():
    square = [[2, 1, 5, 1, 5, 4, 2, 4]]  # x, y corners of a 4 x 4 pixel block
    mask = polygons_to_mask(square, 6, 8)
    assert mask.sum() == 16 and mask[1:5, 2:6].all()
    np.testing.assert_array_equal(decode_segmentation(square, 6, 8), mask)
    np.testing.assert_array_equal(decode_segmentation('324', 3, 3), rle_decode('324', 3, 3))
    with pytest.raises(MaskFormatError, match='at least 3 points'):
        polygons_to_mask([[0, 0, 1, 1]], 4, 4)
    with pytest.raises(MaskFormatError, match='unknown segmentation'):
        decode_segmentation(42, 4, 4)


def test_png_files(tmp_path):
    mask = np.zeros((10, 12), bool)
    mask[2:7, 3:9] = True
    save_mask_png(tmp_path / 'm.png', mask)
    assert not (tmp_path / 'm.png.partial').exists()
    np.testing.assert_array_equal(load_mask_png(tmp_path / 'm.png'), mask)
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 3] = mask * 255
    rgba[..., :3] = 255  # colour everywhere: the alpha channel decides
    cv2.imwrite(str(tmp_path / 'a.png'), rgba)
    np.testing.assert_array_equal(load_mask_png(tmp_path / 'a.png'), mask)
    with pytest.raises(FileNotFoundError, match='nope.png'):
        load_mask_png(tmp_path / 'nope.png')
    (tmp_path / 'bad.png').write_bytes(b'not an image')
    with pytest.raises(MaskFormatError, match='bad.png'):
        load_mask_png(tmp_path / 'bad.png')


def _write_dataset(path, masks):
    b, c = len(masks), len(masks[0])
    with DatasetWriter(path, keypoint_names=['a', 'b'], num_views=c) as w:
        w.add_session('s', [f'cam{i}' for i in range(c)])
        w.add_samples(dict(
            session=np.zeros(b, int), frame=np.arange(b), valid=np.ones((b, c), bool),
            keypoints_2d=np.ones((b, c, 2, 2), np.float32),
            confidence=np.ones((b, c, 2), np.float32),
            K=np.broadcast_to(np.eye(3), (b, c, 3, 3)).copy(),
            R=np.broadcast_to(np.eye(3), (b, c, 3, 3)).copy(), t=np.zeros((b, c, 3)),
            image_size=np.full((b, c, 2), [8, 6], np.int32),
            masks=[[encode_mask(m) if m is not None else b'' for m in row] for row in masks]))
        w.commit()


def test_masks_from_hdf5(tmp_path):
    m0 = np.zeros((6, 8), bool)
    m0[1:4, 2:7] = True
    m1 = ~m0
    _write_dataset(tmp_path / 'd.h5', [[m0, None], [m1, m0]])
    masks, valid = masks_from_hdf5(tmp_path / 'd.h5', [1, 0])
    assert masks.shape == (2, 2, 6, 8) and masks.dtype == np.float32
    np.testing.assert_array_equal(valid, [[True, True], [True, False]])
    np.testing.assert_array_equal(masks[0, 0], m1)
    np.testing.assert_array_equal(masks[1, 0], m0)
    assert np.isnan(masks[1, 1]).all()  # no mask: unknown pixels
    small, _ = masks_from_hdf5(tmp_path / 'd.h5', [0], size=(4, 3))
    assert small.shape == (1, 2, 3, 4)
    np.testing.assert_array_equal(small[0, 0], m0[::2, ::2])  # nearest neighbour
    _write_dataset(tmp_path / 'none.h5', [[None]])
    with pytest.raises(MaskFormatError, match='none of the requested samples'):
        masks_from_hdf5(tmp_path / 'none.h5', [0])


def test_stanfordextra_masks_decode_consistently():
    records = json.loads(shared_path('data', 'stanfordextra_sample',
                                     'StanfordExtra_sample.json').read_text())
    inside = []
    for rec in records:
        mask = rle_decode(rec['seg'], rec['img_height'], rec['img_width'])
        assert mask.shape == (rec['img_height'], rec['img_width'])
        # re-encoding gives back the annotation's exact string
        assert counts_to_rle_string(rle_encode(mask)['counts']) == rec['seg']
        ys, xs = np.nonzero(mask)
        x0, y0, w, h = rec['img_bbox']
        # the mask's extent is the annotated box (within a few percent of its size)
        tol = 0.1 * max(w, h)
        assert abs(xs.min() - x0) < tol and abs(ys.min() - y0) < tol, rec['img_path']
        assert abs(xs.max() + 1 - (x0 + w)) < tol and abs(ys.max() + 1 - (y0 + h)) < tol
        kp = np.asarray(rec['joints'])
        kp = kp[kp[:, 2] > 0]
        cols = np.clip(np.round(kp[:, 0]).astype(int), 0, mask.shape[1] - 1)
        rows = np.clip(np.round(kp[:, 1]).astype(int), 0, mask.shape[0] - 1)
        inside.append(mask[rows, cols].mean())
    # labelled keypoints lie on the dog (a transposed decode would scatter them)
    assert np.mean(inside) > 0.9 and min(inside) > 0.8, inside
