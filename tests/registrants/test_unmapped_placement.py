"""Labels a joint lookup leaves out are placed at the model point nearest to where they are
triangulated: a joint for a label at a joint's centre, a surface vertex for one on the
skin, decided by the median over the frames; the placed keypoints are matched to their
labels and each animal's offsets grow by a row per label."""
import pytest
import torch

from smilfit.apis.fitting.config import registrant_config
from smilfit.registrants.stages import StageConfigError, parse_stages
from smilfit.body_models.keypoint_naming import PLACED_PREFIX, placed_lookup
from smilfit.registrants.unmapped_placement import (extend_lookup, labels_to_place,
                                                    nearest_model_points, place_unmapped)
from smilfit.registry import REGISTRANTS

from ..conftest import mouse_session_config_on_demo_mouse


def test_the_nearest_point_is_the_one_nearest_in_most_frames_not_on_average():
    """The label sits 0.5 from vertex 0 and 1.0 from vertex 1 in four frames; in three
    more (swapped or outlying labels) it sits on vertex 1. On average vertex 1 is nearer
    (0.57 against 0.93); in most frames vertex 0 is, and it is the place. NaN frames do not
    count; a label known in no frame has no place (NaN distance, zero frames)."""
    joint = torch.tensor([[[100.0, 0, 0]]]).expand(8, 1, 3)
    vertices = torch.tensor([[0.0, 0, 0], [1.5, 0, 0]]).expand(8, 2, 3)
    labels = torch.tensor([[0.5, 0, 0]] * 4 + [[1.5, 0, 0]] * 3 + [[float('nan')] * 3])
    unseen = torch.full((8, 1, 3), float('nan'))
    index, distance, frames = nearest_model_points(torch.cat([labels[:, None], unseen], 1),
                                                   joint, vertices)
    assert index.tolist()[0] == 1               # vertex 0, after the one joint
    assert distance[0] == pytest.approx(0.5)
    assert frames.tolist() == [7, 0]
    assert torch.isnan(distance[1])
    index, _, _ = nearest_model_points(labels[:, None], joint, vertices[:, :1] + 200)
    assert index.tolist() == [0]                # the joint, where it is nearer


class _Match:
    unmatched_data = ['a', 'b', 'c']


class _Handler:
    match = _Match()


def test_the_labels_to_place_are_those_no_lookup_entry_names():
    """A lookup entry may map a label to a joint another handler reads (the keypoint
    handler then leaves it unmatched): it is the user's choice, not placed."""
    names = ['a', 'b', 'c', 'd']
    assert labels_to_place(_Handler(), names, {'hip': 'c', 'x': 'd'}, True) == ['a', 'b']
    assert labels_to_place(_Handler(), names, None, ('b',)) == ['b']
    with pytest.raises(ValueError, match="'e'.*not data keypoints"):
        labels_to_place(_Handler(), names, None, ('e',))
    with pytest.raises(ValueError, match="'d'.*maps to model points already"):
        labels_to_place(_Handler(), names, {'x': 'd'}, ('d',))


def test_a_lookup_made_for_names_matched_as_they_are_keeps_matching_them():
    class Model:
        joint_names = ['hip', 'knee']
        keypoint_names = ['hip', 'knee', 'nose']
    lookup = extend_lookup(None, Model(), ['knee', 'nose', 'back'], {'placed:back': 'back'})
    assert lookup == {'knee': 'knee', 'nose': 'nose', 'placed:back': 'back'}
    assert extend_lookup({'hip': 'knee'}, Model(), [], {'placed:back': 'back'}) == {
        'hip': 'knee', 'placed:back': 'back'}
    assert placed_lookup(['hip', 'placed:back', 'placed:x:y']) == {'placed:back': 'back',
                                                                   'placed:x:y': 'x:y'}


def _registrant():
    cfg = mouse_session_config_on_demo_mouse('unused.h5')
    registrant = REGISTRANTS.build(registrant_config(cfg, progress=False)).double()
    return registrant


def test_place_unmapped_defines_matches_and_gives_offsets_to_the_labels_left_out():
    """Extra labels in 3D: one on a surface vertex, one at a joint, one never seen, one two
    body lengths above the body. With no lookup (names matched as they are) the first two
    become ``placed:`` keypoints at that vertex and joint, matched to their labels; the
    third is left out and the fourth placed, each with a warning; the animals' offsets
    grow by a zero row per placed label."""
    registrant = _registrant()
    model = registrant.body_model
    names = list(model.keypoint_names) + ['back', 'middle', 'never', 'away']
    registrant.setup(dict(keypoint_names=names))
    B, K = 6, len(model.keypoint_names)
    params = registrant.initial_params({}, B, torch.zeros(B, dtype=torch.long))
    params['global_orient'] = 0.3 * torch.randn(B, 3, dtype=torch.float64)
    params['transl'] = torch.randn(B, 3, dtype=torch.float64)
    with torch.no_grad():
        posed = model(global_orient=params['global_orient'], transl=params['transl'],
                      return_vertices=True)
    vertex, joint = 421, model.joint_index('spine_2')
    extent = float((posed.joints[0].amax(0) - posed.joints[0].amin(0)).amax())
    points = torch.cat([posed.keypoints, posed.vertices[:, vertex, None],
                        posed.joints[:, joint, None],
                        torch.full((B, 1, 3), float('nan'), dtype=torch.float64),
                        posed.joints[:, :1] + torch.tensor([0.0, 0.0, 2 * extent])], 1)
    groups = torch.zeros(B, dtype=torch.long)
    offsets = params['keypoint_offsets'] = torch.randn(1, K, 3, dtype=torch.float64)
    with pytest.warns(UserWarning) as caught:
        out = place_unmapped(registrant, params, {'keypoints_3d': points}, groups)
    messages = ' '.join(str(w.message) for w in caught)
    assert "['never'] are seen in fewer than two views" in messages
    assert "['away (" in messages and 'sit that far' in messages and 'back' not in messages
    definitions = model.keypoint_definitions
    assert definitions[PLACED_PREFIX + 'back'] == {'vertex': vertex}
    assert definitions[PLACED_PREFIX + 'middle'] == {'joint': 'spine_2'}
    assert PLACED_PREFIX + 'never' not in definitions
    assert PLACED_PREFIX + 'away' in definitions      # placed, with the warning
    assert out['keypoint_offsets'].shape == (1, K + 3, 3)
    assert torch.equal(out['keypoint_offsets'][:, :K], offsets)
    assert not out['keypoint_offsets'][:, K:].any()
    match = registrant.keypoint_handler().match
    pairs = dict(zip(match.model_names, match.data_names))
    assert pairs[PLACED_PREFIX + 'back'] == 'back' and pairs['nose'] == 'nose'
    assert match.unmatched_data == ['never']
    # placed once: nothing is left to place (the never-seen label aside)
    assert place_unmapped(registrant, out, {'keypoints_3d': points}, groups,
                          requested=()) is out


def test_placing_needs_3d_points_or_calibrated_views():
    registrant = _registrant()
    registrant.setup(dict(keypoint_names=list(registrant.body_model.keypoint_names) + ['x']))
    params = registrant.initial_params({}, 2, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match='needs 3D keypoints or calibrated views'):
        place_unmapped(registrant, params, {'keypoints_2d': torch.zeros(2, 1, 36, 2)},
                       torch.zeros(2, dtype=torch.long))


def test_place_unmapped_is_true_false_or_a_list_of_labels():
    stages = parse_stages([dict(name='s', fit=['keypoint_offsets'], place_unmapped=['a']),
                           dict(name='t', fit=['keypoint_offsets'], place_unmapped=True)],
                          ['kp2d'])
    assert stages[0].place_unmapped == ('a',) and stages[1].place_unmapped is True
    for bad in ('a', 1, [1]):
        with pytest.raises(StageConfigError, match='place_unmapped'):
            parse_stages([dict(name='s', fit=['keypoint_offsets'], place_unmapped=bad)],
                         ['kp2d'])


def test_stored_definitions_bring_the_placed_points_and_their_matches_to_a_new_registrant():
    """What a reused skeleton does: a registrant given another's definitions (with a
    placed point) defines and matches it; definitions naming points the model does not
    have (other than placed ones) are refused."""
    import json

    from smilfit.registrants.marker_placement import (apply_keypoint_definitions,
                                                      keypoint_definitions_text)
    first = _registrant()
    model = first.body_model
    names = list(model.keypoint_names) + ['back']
    first.setup(dict(keypoint_names=names, joint_lookup={n: n for n in model.keypoint_names}))
    B = 3
    params = first.initial_params({}, B, torch.zeros(B, dtype=torch.long))
    with torch.no_grad():
        posed = model(return_vertices=True)
    points = torch.cat([posed.keypoints, posed.vertices[:, 421, None]], 1).expand(B, -1, -1)
    place_unmapped(first, params, {'keypoints_3d': points}, torch.zeros(B, dtype=torch.long))
    text = keypoint_definitions_text(first)

    again = _registrant()
    again.setup(dict(keypoint_names=names,
                     joint_lookup={n: n for n in again.body_model.keypoint_names}))
    assert 'back' in again.keypoint_handler().match.unmatched_data
    apply_keypoint_definitions(again, text)
    assert again.body_model.keypoint_definitions == model.keypoint_definitions
    match = again.keypoint_handler().match
    assert dict(zip(match.model_names, match.data_names))[PLACED_PREFIX + 'back'] == 'back'
    other = json.loads(str(text))
    other['elsewhere'] = {'vertex': 3}
    with pytest.raises(ValueError, match='stored keypoint definitions name'):
        apply_keypoint_definitions(_registrant(), json.dumps(other))


def test_a_keypoint_handler_restricted_to_some_keypoints_keeps_the_placed_ones():
    """A keypoint handler given ``keypoints=[...]`` matches only those: the placed label
    joins that list, so it is fitted like the ones named."""
    registrant = _registrant()
    model = registrant.body_model
    handler = registrant.handlers['kp2d']
    handler.keypoint_subset = list(model.keypoint_names[:4])
    names = list(model.keypoint_names) + ['back']
    registrant.setup(dict(keypoint_names=names))
    assert registrant.keypoint_handler() is handler
    B = 3
    params = registrant.initial_params({}, B, torch.zeros(B, dtype=torch.long))
    with torch.no_grad():
        posed = model(return_vertices=True)
    points = torch.cat([posed.keypoints, posed.vertices[:, 421, None]], 1).expand(B, -1, -1)
    place_unmapped(registrant, params, {'keypoints_3d': points},
                   torch.zeros(B, dtype=torch.long), requested=('back',))
    assert handler.keypoint_subset == list(model.keypoint_names[:4]) + [PLACED_PREFIX + 'back']
    match = handler.match
    assert dict(zip(match.model_names, match.data_names))[PLACED_PREFIX + 'back'] == 'back'
    assert len(match.model_names) == 5
