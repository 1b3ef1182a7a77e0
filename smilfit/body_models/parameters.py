"""The names of body-model parameters, defined once.

Stages fit them, registrants share some of them across samples, datasets store them as
ground truth, visuals feed them back to the model: every place reads the names from here.
"""

#: Parameters a fitting stage may fit, in the order messages list them.
FITTABLE_PARAMS = ('global_orient', 'body_pose', 'betas', 'transl', 'log_scale', 'bone_trans',
                   'keypoint_offsets', 'vertex_offsets', 'global_log_scale')
#: The fittable parameters the body model takes as inputs (``keypoint_offsets`` belong to the
#: keypoint handlers, not to the model).
MODEL_INPUTS = tuple(p for p in FITTABLE_PARAMS if p != 'keypoint_offsets')
#: Parameters that may be shared by the samples of a group (an animal, a session).
SHAREABLE_PARAMS = ('betas', 'log_scale', 'bone_trans', 'keypoint_offsets', 'vertex_offsets',
                    'global_log_scale')
#: Per-animal parameters that shape its rest body (its bones, shape and label offsets).
REST_BODY_PARAMS = ('betas', 'log_scale', 'bone_trans', 'keypoint_offsets', 'vertex_offsets')
#: Ground-truth parameters a dataset stores under ``params/`` (others are allowed too).
DATASET_PARAMS = ('global_orient', 'body_pose', 'betas', 'transl', 'log_scale', 'bone_trans')

__all__ = ['FITTABLE_PARAMS', 'MODEL_INPUTS', 'SHAREABLE_PARAMS', 'REST_BODY_PARAMS',
           'DATASET_PARAMS']
