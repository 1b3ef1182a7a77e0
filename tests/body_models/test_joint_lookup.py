"""smilfit.body_models.joint_lookup: the one reader of joint lookups (ingestion and fitting)."""
import pytest

from smilfit.body_models.joint_lookup import JointLookupError, joint_lookup_dict, read_joint_lookup


def test_csv_with_header_comments_and_unmatched_joints(tmp_path):
    path = tmp_path / 'lookup.csv'
    path.write_text('# model joints -> SLEAP nodes\nmodel_joint,data_keypoint\nnose,Nose\n'
                    'tail,\nhead,Head\n')
    assert read_joint_lookup(path) == [('nose', 'Nose'), ('tail', ''), ('head', 'Head')]
    assert joint_lookup_dict(str(path)) == {'nose': 'Nose', 'tail': '', 'head': 'Head'}
    assert joint_lookup_dict({'nose': 'Nose', 'tail': None}) == {'nose': 'Nose', 'tail': ''}
    assert joint_lookup_dict(None) is None


@pytest.mark.parametrize('text, message', [
    ('nose,Nose\nnose,Snout\n', r"model joints listed twice: \['nose'\]"),
    ('nose,Nose,extra\n', 'row 1 .* expected "model_joint,data_keypoint"'),
    ('model_joint,data_keypoint\n', 'no joints in the lookup table'),
])
def test_bad_lookup_files(tmp_path, text, message):
    path = tmp_path / 'lookup.csv'
    path.write_text(text)
    with pytest.raises(JointLookupError, match=message):
        read_joint_lookup(path)
    with pytest.raises(FileNotFoundError, match='joint lookup .* does not exist'):
        read_joint_lookup(tmp_path / 'missing.csv')
