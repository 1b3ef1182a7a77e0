"""The triangulations a fit is compared with: smilfit's DLT and anipose's (aniposelib, an
optional benchmark dependency; its tests skip without it). On noiseless labels of known
points every one recovers them, also with lens distortion and with samples whose
sessions have different cameras; a point fewer than two views see is NaN."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from smilfit.cameras.projection import project_points_numpy
from smilfit.evaluation.triangulation_peers import (_camera_groups, _observed_points,
                                                     aniposelib_available, aniposelib_peers,
                                                     dlt_peer)

B, C, K = 6, 3, 5


def _cameras(seed):
    rng = np.random.default_rng(seed)
    Ks, Rs, ts = [], [], []
    for c in range(C):
        R = Rotation.from_euler('xyz', [rng.uniform(-0.3, 0.3), 2 * np.pi * c / C + 0.2,
                                        rng.uniform(-0.2, 0.2)]).as_matrix()
        Ks.append(np.array([[800.0, 0, 320], [0, 800.0, 240], [0, 0, 1]]))
        Rs.append(R)
        ts.append(np.array([0.0, 0.0, 60.0]) + rng.normal(0, 2, 3))
    dist = np.array([[-0.1, 0.02, 0.001, -0.001, 0.0]] * C)
    return np.stack(Ks), np.stack(Rs), np.stack(ts), dist


def _observations(two_sessions=False):
    """Noiseless labels of one rigid body's points (limb lengths the same in every
    sample), turned and moved per sample; with ``two_sessions`` the last three samples
    have other cameras."""
    rng = np.random.default_rng(0)
    body = rng.normal(0, 5, (K, 3))
    turns = Rotation.random(B, random_state=1).as_matrix()
    points = np.einsum('bij,kj->bki', turns, body) + rng.normal(0, 3, (B, 1, 3))
    cams = [_cameras(1), _cameras(2) if two_sessions else _cameras(1)]
    session = np.repeat([0, 1], B // 2)
    Kc, Rc, tc, dist = (np.stack([cams[s][i] for s in session]) for i in range(4))
    uv, _ = project_points_numpy(points[:, None], Kc, Rc, tc, dist)      # (B, C, K, 2)
    visible = np.ones((B, C, K), bool)
    visible[0, 1:, 2] = False                     # sample 0, keypoint 2: one view only
    obs = dict(keypoints_2d=uv, visible=visible, confidence=visible.astype(float),
               view_valid=np.ones((B, C), bool), K=Kc, R=Rc, t=tc, dist=dist)
    return obs, points


@pytest.mark.parametrize('two_sessions', [False, True])
def test_dlt_recovers_noiseless_points(two_sessions):
    obs, points = _observations(two_sessions)
    got = dlt_peer(obs)
    assert np.isnan(got[0, 2]).all()
    ok = np.isfinite(got).all(-1)
    assert ok.sum() == B * K - 1
    np.testing.assert_allclose(got[ok], points[ok], atol=1e-3)


def test_samples_are_grouped_by_their_cameras_and_views():
    obs, _ = _observations(two_sessions=True)
    obs['view_valid'][5, 0] = False             # sample 5 lost a view: a group of its own
    groups = _camera_groups(obs, _observed_points(obs))
    assert sorted((tuple(s), tuple(v)) for s, v in groups.values()) == [
        ((0, 1, 2), (0, 1, 2)), ((3, 4), (0, 1, 2)), ((5,), (1, 2))]


@pytest.mark.skipif(not aniposelib_available(), reason='aniposelib is not installed')
@pytest.mark.parametrize('two_sessions', [False, True])
def test_anipose_peers_recover_noiseless_points(two_sessions):
    obs, points = _observations(two_sessions)
    peers = aniposelib_peers(edges=[(0, 1), (1, 3), (3, 4)])
    assert list(peers) == ['anipose', 'anipose RANSAC', 'anipose limbs', 'anipose smooth']
    for name, peer in peers.items():
        got = peer(obs)
        assert np.isnan(got[0, 2]).all(), name
        ok = np.isfinite(got).all(-1)
        assert ok.sum() == B * K - 1, name
        np.testing.assert_allclose(got[ok], points[ok], atol=0.05, err_msg=name)


@pytest.mark.skipif(not aniposelib_available(), reason='aniposelib is not installed')
def test_the_smoothed_peer_follows_each_animals_runs_of_frames(monkeypatch):
    """Frames of one animal that follow each other are smoothed together; another animal,
    or a gap, starts a run of its own."""
    from aniposelib.cameras import CameraGroup
    obs, points = _observations(False)
    obs['frame_index'] = np.array([0, 1, 2, 7, 8, 9])      # a gap after frame 2
    obs['animal'] = np.array([0, 0, 0, 0, 1, 1])           # and another animal
    runs = []
    original = CameraGroup.optim_points

    def recording(self, points2d, *args, **kwargs):
        runs.append(points2d.shape[1])
        return original(self, points2d, *args, **kwargs)
    monkeypatch.setattr(CameraGroup, 'optim_points', recording)
    got = aniposelib_peers(edges=[(0, 1)])['anipose smooth'](obs)
    assert sorted(runs) == [2, 3]                 # frames 0-2; 8-9; frame 7 alone
    assert np.isfinite(got[1:]).all()


@pytest.mark.skipif(aniposelib_available(), reason='aniposelib is installed')
def test_without_aniposelib_the_error_says_how_to_install_it():
    with pytest.raises(ImportError, match='pip install --no-deps aniposelib'):
        aniposelib_peers(edges=[(0, 1)])
