"""StanfordExtra json -> smilfit HDF5: crop geometry, cameras, keypoints, masks, errors.

A synthetic record checks the geometry against values worked out by hand; three real
records check that the stored keypoints, masks and boxes agree with the annotations.
"""
import json

import cv2
import numpy as np
import pytest

from smilfit.body_models.quadruped import STANFORDEXTRA_KEYPOINT_NAMES
from smilfit.cli.ingest_stanfordextra import main as cli_main
from smilfit.datasets.hdf5_format import DatasetReader
from smilfit.datasets.ingest_images import box_affine, crop_frame
from smilfit.datasets.ingest_sleap import DataIngestError
from smilfit.datasets.ingest_stanfordextra import (bbox_crop_box, default_camera,
                                                   ingest_stanfordextra, stored_bboxes)
from smilfit.datasets.masks import counts_to_rle_string, masks_from_hdf5, rle_decode, rle_encode

from tests.conftest import shared_path


def _synthetic(tmp_path, **overrides):
    """One 40 x 20 image with a 20 x 10 white block (the dog) at x 10..29, y 5..14."""
    img = np.zeros((20, 40, 3), np.uint8)
    img[5:15, 10:30] = 255
    (tmp_path / 'breed').mkdir(exist_ok=True)
    cv2.imwrite(str(tmp_path / 'breed' / 'dog.png'), img)
    joints = np.zeros((24, 3))
    joints[0] = [10.0, 0.0, 1.0]   # left_front_paw
    joints[16] = [29.0, 14.0, 1.0]  # nose
    rec = dict(img_path='breed/dog.png', img_width=40, img_height=20,
               joints=joints.tolist(), img_bbox=[10, 5, 20, 10], is_multiple_dogs=False,
               seg=counts_to_rle_string(rle_encode(img[..., 0] > 0)['counts']))
    rec.update(overrides)
    path = tmp_path / 'extra.json'
    path.write_text(json.dumps([rec]))
    return path


def test_geometry_by_hand(tmp_path):
    js = _synthetic(tmp_path)
    # margin 0: square box of side 20 centred on (20, 10): x0 = 10, y0 = 0; 40 px -> x2
    assert bbox_crop_box([10, 5, 20, 10], 0.0) == (10, 0, 20, 20)
    out = ingest_stanfordextra(js, tmp_path / 'd.h5', target_size=40, margin=0.0,
                               progress=False)
    r = DatasetReader(out)
    assert r.keypoint_names == list(STANFORDEXTRA_KEYPOINT_NAMES) and len(r) == 1
    assert r.session_names == ['breed'] and r.num_views == 1
    b = r.read([0])
    # x' = (x - 10 + 0.5) * 2 - 0.5, y' = (y - 0 + 0.5) * 2 - 0.5
    np.testing.assert_allclose(b['keypoints_2d'][0, 0, 0], [0.5, 0.5])
    np.testing.assert_allclose(b['keypoints_2d'][0, 0, 16], [38.5, 28.5])
    assert np.isnan(b['keypoints_2d'][0, 0, 1]).all() and not b['visible'][0, 0, 1]
    assert b['visible'][0, 0, [0, 16]].all() and b['confidence'][0, 0, 1] == 0
    # default camera f = max(W, H) = 40, c = (19.5, 9.5); stored: f 80, c = (19.5, 19.5)
    np.testing.assert_allclose(default_camera(40, 20), [[40, 0, 19.5], [0, 40, 9.5], [0, 0, 1]])
    np.testing.assert_allclose(b['K'][0, 0], [[80, 0, 19.5], [0, 80, 19.5], [0, 0, 1]])
    np.testing.assert_array_equal(b['R'][0, 0], np.eye(3))
    assert not b['calibrated'][0, 0] and b['valid'][0, 0]
    np.testing.assert_array_equal(b['image_size'][0, 0], [40, 40])
    # the block covers stored rows 10..29 (source rows 5..14), all 40 columns
    masks, valid = masks_from_hdf5(r, [0])
    expected = np.zeros((40, 40), np.float32)
    expected[10:30] = 1
    np.testing.assert_array_equal(masks[0, 0], expected)
    img = r.read_images(0)[0]
    assert img[20, 20].min() > 200 and img[2, 20].max() < 40  # same content as the mask
    # the box [10, 5, 20, 10] spans pixel edges 9.5..29.5, 4.5..14.5 -> stored -0.5..39.5, 9.5..29.5
    np.testing.assert_allclose(stored_bboxes(r), [[-0.5, 9.5, 39.5, 29.5]])


def test_errors(tmp_path):
    js = _synthetic(tmp_path)
    with pytest.raises(DataIngestError, match='not found'):
        ingest_stanfordextra(js, tmp_path / 'x.h5', image_dir=tmp_path / 'elsewhere',
                             progress=False)
    assert not (tmp_path / 'x.h5').exists() and not (tmp_path / 'x.h5.partial').exists()
    bad = _synthetic(tmp_path, img_width=41)
    with pytest.raises(DataIngestError, match='41 x 20'):
        ingest_stanfordextra(bad, tmp_path / 'x.h5', progress=False)
    bad = _synthetic(tmp_path, joints=[[0, 0, 0]] * 23)
    with pytest.raises(DataIngestError, match=r'\(24, 3\)'):
        ingest_stanfordextra(bad, tmp_path / 'x.h5', progress=False)
    bad = _synthetic(tmp_path, seg='11W')
    with pytest.raises(DataIngestError, match='truncated'):
        ingest_stanfordextra(bad, tmp_path / 'x.h5', progress=False)
    assert not (tmp_path / 'x.h5').exists() and not (tmp_path / 'x.h5.partial').exists()
    # the CLI reports it and exits 1
    assert cli_main([str(bad), str(tmp_path / 'x.h5'), '--no-progress']) == 1
    assert not (tmp_path / 'x.h5').exists()


def test_unreadable_json_names_the_file(tmp_path):
    from smilfit.datasets.ingest_stanfordextra import load_stanfordextra
    path = tmp_path / 'records.json'
    for content, message in ((b'[{"img_path": ', 'not a readable json file'),
                             (b'[' * 100_000 + b']' * 100_000, 'nested too deeply')):
        path.write_bytes(content)
        with pytest.raises(DataIngestError, match=message) as info:
            load_stanfordextra(path)
        assert 'records.json' in str(info.value)


def test_cli_and_overwrite(tmp_path, capsys):
    js = _synthetic(tmp_path)
    out = tmp_path / 'd.h5'
    assert cli_main([str(js), str(out), '--target-size', '32', '--no-progress']) == 0
    assert DatasetReader(out).read([0])['image_size'][0, 0].tolist() == [32, 32]
    assert cli_main([str(js), str(out), '--no-progress']) == 1  # exists
    assert 'exists' in capsys.readouterr().err
    assert cli_main([str(js), str(out), '--no-progress', '--overwrite']) == 0


def test_real_records_agree_with_annotations(tmp_path):
    js = shared_path('data', 'stanfordextra_sample', 'StanfordExtra_sample.json')
    records = json.loads(js.read_text())
    idx = [0, 2, 6]
    size, margin = 64, 0.1
    r = DatasetReader(ingest_stanfordextra(js, tmp_path / 'd.h5', target_size=size,
                                           margin=margin, indices=idx, progress=False))
    b = r.read([0, 1, 2])
    masks, valid = masks_from_hdf5(r, [0, 1, 2])
    assert valid.all() and masks.shape == (3, 1, size, size)
    boxes = stored_bboxes(r)
    for n, i in enumerate(idx):
        rec = records[i]
        joints = np.asarray(rec['joints'])
        box = bbox_crop_box(rec['img_bbox'], margin)
        crop = box_affine(box, (size, size))
        np.testing.assert_allclose(b['crop'][n, 0], crop)
        lab = joints[:, 2] > 0
        expect = joints[lab, :2] @ crop[:2, :2].T + crop[:2, 2]
        np.testing.assert_allclose(b['keypoints_2d'][n, 0, lab], expect, atol=1e-4)
        assert np.isnan(b['keypoints_2d'][n, 0, ~lab]).all()
        # the stored mask is the cropped annotation
        full = rle_decode(rec['seg'], rec['img_height'], rec['img_width'])
        ref = crop_frame(full.astype(np.uint8) * 255, box, (size, size)) > 127
        np.testing.assert_array_equal(masks[n, 0] > 0.5, ref)
        # the box's longer side fills size / (1 + 2 margin) pixels, centred
        x0, y0, x1, y1 = boxes[n]
        assert max(x1 - x0, y1 - y0) == pytest.approx(size / (1 + 2 * margin), abs=1.0)
        assert (x0 + x1) / 2 == pytest.approx((size - 1) / 2, abs=1.0)
        # keypoints on the dog: the stored mask covers most of them
        kp = np.round(b['keypoints_2d'][n, 0, lab]).astype(int).clip(0, size - 1)
        assert masks[n, 0][kp[:, 1], kp[:, 0]].mean() >= 0.7
    attrs = json.loads(r.attrs['records'])
    assert [a['index'] for a in attrs] == idx
