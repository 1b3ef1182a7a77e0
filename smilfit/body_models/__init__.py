"""Body models: the LBS model, its pure functions, model files and the procedural builder.

- :class:`SMILModel` (``smil_model.py``): the registered body model.
- :mod:`.lbs` and :mod:`.rotations`: pure, batched, differentiable functions.
- :class:`BodyModelData` (``model_data.py``): the format-independent model description.
- :mod:`.io`: legacy pickles (restricted unpickler) and smilfit's JSON model format.
- :mod:`.mesh_from_skeleton` / :mod:`.demo_model`: skinned models grown around a skeleton
  (:mod:`.builder` re-exports the former's names).
"""
from .demo_model import build_demo_smil_model, demo_model_data, demo_skeleton
from .io import load_model_data, save_model_data
from .mesh_from_skeleton import SkeletonError, build_model_from_skeleton
from .model_data import BodyModelData, ModelValidationError
from .quadruped import build_quadruped_smil_model, quadruped_model_data
from .smil_model import BodyModelOutput, SMILModel

__all__ = [
    'BodyModelData', 'ModelValidationError', 'BodyModelOutput', 'SMILModel',
    'build_demo_smil_model', 'SkeletonError', 'build_model_from_skeleton', 'demo_model_data',
    'demo_skeleton', 'load_model_data', 'save_model_data', 'build_quadruped_smil_model',
    'quadruped_model_data',
]
