"""DeepLabCut and COCO labels with their images, through sleap-io, into a prepared dataset.

A tiny DeepLabCut project (``config.yaml``, ``labeled-data/<video>/CollectedData_<scorer>.csv``
beside its PNG frames) and a tiny COCO keypoint file (``annotations.json`` beside an
``images/`` folder) are written here, in those tools' own layouts, from synthetic renders:
the project needs no data files. Each is ingested and the stored images and keypoints are
compared with what was written.
"""
import json

import cv2
import h5py
import numpy as np
import pytest

from smilfit.datasets import DatasetReader, generate_synthetic_dataset
from smilfit.datasets.ingest_sleap import DataIngestError, ingest_sleap

SIZE = (96, 80)
EDGES = [('pelvis', 'spine_1'), ('spine_1', 'spine_2'), ('neck', 'head'), ('head', 'nose')]


@pytest.fixture(scope='module')
def renders(tmp_path_factory):
    """(keypoint names, (N, K, 2) pixels with NaN where hidden, N RGB images)."""
    tmp = tmp_path_factory.mktemp('renders')
    generate_synthetic_dataset(tmp / 'r.h5', num_views=1, num_sessions=1, frames_per_session=4,
                               image_size=SIZE, masks=False, progress=False, seed=5)
    r = DatasetReader(tmp / 'r.h5')
    d = r.read(np.arange(len(r)), keys=['keypoints_2d', 'visible'])
    kp = np.where(d['visible'][:, 0, :, None], d['keypoints_2d'][:, 0], np.nan)
    assert np.isfinite(kp).all(-1).sum() > 10 * len(kp)
    return list(r.keypoint_names), kp.astype(np.float64), [r.read_images(i)[0]
                                                           for i in range(len(r))]


def make_dlc_project(root, names, kp, images, videos=('mouse1',), scorer='me'):
    """A DeepLabCut project as DeepLabCut 2.2+ writes it; returns the CSV of each video."""
    import yaml
    csvs = []
    for video in videos:
        folder = root / 'labeled-data' / video
        folder.mkdir(parents=True)
        rows = [['scorer', '', ''] + [scorer] * (2 * len(names)),
                ['bodyparts', '', ''] + [n for n in names for _ in 'xy'],
                ['coords', '', ''] + ['x', 'y'] * len(names)]
        for i, (points, image) in enumerate(zip(kp, images)):
            name = f'img{10 * i:04d}.png'     # DLC names frames by their video frame number
            cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            rows.append(['labeled-data', video, name] +
                        ['' if np.isnan(v) else repr(float(v)) for v in points.ravel()])
        csv_path = folder / f'CollectedData_{scorer}.csv'
        csv_path.write_text('\n'.join(','.join(row) for row in rows) + '\n')
        csvs.append(csv_path)
    config = dict(Task='mouse', scorer=scorer, date='Jan1', multianimalproject=False,
                  bodyparts=list(names), skeleton=[list(e) for e in EDGES],
                  video_sets={str(root / 'videos' / f'{v}.mp4'): dict(
                      crop=f'0, {SIZE[0]}, 0, {SIZE[1]}') for v in videos})
    (root / 'config.yaml').write_text(yaml.safe_dump(config))
    return csvs


def make_coco(root, names, kp, images):
    """A COCO keypoint file: image i holds the animal, image 0 also a second one (its
    points shifted 7 px left); returns (json path, per-annotation (image index, points))."""
    (root / 'images').mkdir(parents=True)
    entries, annotations, expected = [], [], []
    for i, image in enumerate(images):
        name = f'images/frame_{i:03d}.png'
        cv2.imwrite(str(root / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        entries.append(dict(id=100 + i, file_name=name, width=SIZE[0], height=SIZE[1]))
    for i, points in [(i, kp[i]) for i in range(len(kp))] + [(0, kp[0] - [7.0, 0.0])]:
        seen = np.isfinite(points).all(-1)
        flat = np.concatenate([np.nan_to_num(points), np.where(seen, 2, 0)[:, None]], 1)
        box = [float(np.nanmin(points[:, 0])), float(np.nanmin(points[:, 1])),
               float(np.nanmax(points[:, 0]) - np.nanmin(points[:, 0])),
               float(np.nanmax(points[:, 1]) - np.nanmin(points[:, 1]))]
        annotations.append(dict(id=len(annotations) + 1, image_id=100 + i, category_id=1,
                                keypoints=flat.ravel().tolist(), num_keypoints=int(seen.sum()),
                                bbox=box, area=box[2] * box[3], iscrowd=0))
        expected.append((i, points))
    index = {n: j + 1 for j, n in enumerate(names)}          # COCO skeletons are 1-based
    doc = dict(images=entries, annotations=annotations, categories=[dict(
        id=1, name='mouse', supercategory='animal', keypoints=list(names),
        skeleton=[[index[a], index[b]] for a, b in EDGES])])
    path = root / 'annotations.json'
    path.write_text(json.dumps(doc))
    return path, expected


def _check_sample(reader, row, points, image):
    """The stored sample ``row`` is ``points`` / ``image`` through its stored crop."""
    d = reader.read([row], keys=['keypoints_2d', 'crop', 'image_size'])
    A = d['crop'][0, 0]
    expect = points @ A[:2, :2].T + A[:2, 2]
    np.testing.assert_allclose(d['keypoints_2d'][0, 0], expect, atol=1e-3)   # NaN alike
    W, H = d['image_size'][0, 0]
    stored = reader.read_images(row)[0].astype(np.float64)
    warped = cv2.warpAffine(image, A[:2], (int(W), int(H)), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT).astype(np.float64)
    assert stored.shape == (H, W, 3)
    assert np.abs(stored - warped).mean() < 4.0       # the image (JPEG-stored) itself


def test_dlc_csv_with_its_frames(tmp_path, renders):
    names, kp, images = renders
    (csv_path,) = make_dlc_project(tmp_path / 'project', names, kp, images)
    out = tmp_path / 'dlc.h5'
    summary = ingest_sleap(csv_path, out, crop_mode='bbox_crop', target_size=64,
                           progress=False)
    r = DatasetReader(out)
    assert summary.has_images and len(r) == len(images)
    # sleap-io lists DLC body parts by name (smilfit matches keypoints by name)
    assert r.keypoint_names == sorted(names) and r.session_names == ['CollectedData_me']
    kp, names = kp[:, [names.index(n) for n in r.keypoint_names]], r.keypoint_names
    assert list(r.read(np.arange(len(r)), keys=['frame'])['frame']) == list(range(len(images)))
    # the project's config.yaml skeleton comes along, and the frames' folder is the video
    assert sorted(r.skeleton_edges) == sorted((names.index(a), names.index(b))
                                              for a, b in EDGES)
    assert r.video_paths == [[str(csv_path.parent.resolve())]]
    for i in range(len(images)):
        _check_sample(r, i, kp[i], images[i])
    assert r.read([0], keys=['image_size'])['image_size'][0, 0].tolist() == [64, 64]


def test_dlc_project_config_yaml_gives_a_session_per_video(tmp_path, renders):
    names, kp, images = renders
    make_dlc_project(tmp_path / 'project', names, kp, images, videos=('mouse1', 'mouse2'))
    out = tmp_path / 'dlc.h5'
    ingest_sleap(tmp_path / 'project' / 'config.yaml', out, progress=False)
    r = DatasetReader(out)
    assert r.session_names == ['config/mouse1', 'config/mouse2'] and len(r) == 2 * len(images)
    kp = kp[:, [names.index(n) for n in r.keypoint_names]]
    d = r.read(np.arange(len(r)), keys=['session', 'frame'])
    for row, (s, f) in enumerate(zip(d['session'], d['frame'])):
        _check_sample(r, row, kp[f], images[f])


def test_dlc_h5_reads_the_csv_beside_it(tmp_path, renders):
    names, kp, images = renders
    (csv_path,) = make_dlc_project(tmp_path / 'project', names, kp, images)
    table = csv_path.with_suffix('.h5')
    with h5py.File(table, 'w') as f:      # the layout pandas.to_hdf gives DLC's labels
        f.create_group('df_with_missing').attrs['pandas_type'] = 'frame_table'
    out = tmp_path / 'dlc.h5'
    ingest_sleap(table, out, progress=False)
    assert len(DatasetReader(out)) == len(images)
    csv_path.unlink()
    with pytest.raises(DataIngestError, match=r'CollectedData_me\.h5.*DeepLabCut.*'
                                              r'CollectedData_me\.csv'):
        ingest_sleap(table, tmp_path / 'other.h5', progress=False)


def test_coco_file_with_its_images(tmp_path, renders):
    names, kp, images = renders
    path, expected = make_coco(tmp_path / 'coco', names, kp, images)
    out = tmp_path / 'coco.h5'
    ingest_sleap(path, out, progress=False)
    r = DatasetReader(out)
    assert r.keypoint_names == names and len(r) == len(expected)
    assert sorted(r.skeleton_edges) == sorted((names.index(a), names.index(b))
                                              for a, b in EDGES)
    d = r.read(np.arange(len(r)), keys=['frame', 'keypoints_2d', 'crop'])
    for i, points in expected:
        rows = np.flatnonzero(d['frame'] == i)
        # the sample of this annotation: the one whose points are these
        A = d['crop'][rows, 0]
        mapped = np.einsum('rab,kb->rka', A[:, :2, :2], np.nan_to_num(points)) + A[:, None, :2, 2]
        err = np.nanmean(np.abs(d['keypoints_2d'][rows, 0] - mapped), axis=(1, 2))
        _check_sample(r, int(rows[np.argmin(err)]), points, images[i])
    assert sorted(np.bincount(d['frame']).tolist()) == [1, 1, 1, 2]
