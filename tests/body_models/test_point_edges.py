"""Skeleton edges between keypoints from the kinematic tree of the joints carrying them."""
import numpy as np
import pytest

from smilfit.body_models.point_edges import kinematic_point_edges

#        0 root
#        |
#        1 spine ---- 3 hip -- 4 knee -- 5 paw
#        |
#        2 head
PARENTS = [-1, 0, 1, 1, 3, 4]


def test_joint_points_link_to_the_nearest_ancestor_carrying_one():
    # points on root, head, knee, paw: the hip and spine carry none
    assert kinematic_point_edges(PARENTS, [0, 2, 4, 5]) == [(0, 1), (0, 2), (2, 3)]


def test_points_on_one_joint_link_to_the_first_on_it():
    assert kinematic_point_edges(PARENTS, [1, 1, 2]) == [(0, 1), (0, 2)]


def test_points_without_a_joint_get_no_edge():
    assert kinematic_point_edges(PARENTS, [0, -1, 2]) == [(0, 2)]


def test_a_surface_point_links_to_the_nearest_joint_point_below_its_carrier():
    """A claw tip skinned to the knee's bone sits next to the paw joint: linked there,
    not to the knee."""
    carriers = [3, 4, 5, 4]                 # hip, knee, paw; the claw hangs on the knee
    is_joint = [True, True, True, False]
    rest = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [2.2, 0, 0]], float)
    assert kinematic_point_edges(PARENTS, carriers, is_joint, rest) == \
        [(0, 1), (1, 2), (2, 3)]
    # without rest positions: to the joint point on its carrier
    assert kinematic_point_edges(PARENTS, carriers, is_joint) == [(0, 1), (1, 2), (1, 3)]


def test_a_surface_point_with_no_joint_point_below_links_upwards():
    carriers, is_joint = [0, 5], [True, False]       # root joint point, a paw-skinned point
    rest = np.zeros((2, 3))
    assert kinematic_point_edges(PARENTS, carriers, is_joint, rest) == [(0, 1)]


def test_pieces_meeting_at_a_bare_joint_are_joined_by_the_fewest_bones():
    """No keypoint on the root or spine: the head is linked to the hip (three bones apart,
    nearer than the knee's four), not left as a piece of its own."""
    assert kinematic_point_edges(PARENTS, [2, 3, 4]) == [(0, 1), (1, 2)]
    # two branches meeting at a bare root, at rest the paw nearer the head than the knee
    parents = [-1, 0, 1, 0, 3]              # root; 1 - 2 one branch, 3 - 4 the other
    rest = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 5]], float)
    assert kinematic_point_edges(parents, [1, 3, 4], rest_points=rest) == [(0, 1), (1, 2)]
    assert len(kinematic_point_edges(parents, [2, 4])) == 1


@pytest.mark.parametrize('parents', [[2, 0, 1], [-1, 2, 1]], ids=['all', 'a-branch'])
def test_a_cyclic_table_is_refused(parents):
    with pytest.raises(ValueError, match='cycle'):
        kinematic_point_edges(parents, [0])
