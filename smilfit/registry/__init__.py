"""smilfit's registries.

Every mmengine root registry gets a child here (``parent=``) whose ``locations``
name the smilfit sub-packages that register into it, so that configs build
objects by name under the ``smilfit`` scope and mmengine's Runner finds them
without "Failed to search registry with scope" noise. smilfit's own concepts
(body models, losses, handlers, registrants, cameras, renderers) get registries
of their own.

Third-party code registers plugins the same way smilfit does::

    from smilfit.registry import LOSSES

    @LOSSES.register_module()
    class MyLoss(nn.Module): ...

and a config loads them with ``custom_imports = dict(imports=['my_pkg.my_loss'])``.

Importing this module applies the mmengine compatibility fixes (:mod:`smilfit.engine.compat`)
first: whatever builds a smilfit component goes through here.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import INFERENCERS as MMENGINE_INFERENCERS
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import \
    RUNNER_CONSTRUCTORS as MMENGINE_RUNNER_CONSTRUCTORS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import STRATEGIES as MMENGINE_STRATEGIES
from mmengine.registry import TASK_UTILS as MMENGINE_TASK_UTILS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

SCOPE = 'smilfit'


def _child(name: str, parent: Registry, *locations: str) -> Registry:
    """A child of an mmengine root in the ``smilfit`` scope.

    ``locations`` are the smilfit sub-packages whose import registers modules into
    it. mmengine imports every location on the first lookup and fails on a missing
    one, so a sub-package is added here in the change that creates it.
    """
    return Registry(name, parent=parent, scope=SCOPE,
                    locations=[f'smilfit.{loc}' for loc in locations])


# Children of mmengine's roots -------------------------------------------------
# The runner-side children list 'engine.hooks' even where it registers nothing of theirs:
# building a Runner, loop or optimizer in the smilfit scope then imports
# smilfit.engine.hooks, which applies the runner-side mmengine compatibility fixes
# (engine/compat.py) first. smilfit.engine alone applies only the light ones, so that
# fitting never imports mmengine's runner, model and optimizer modules.
RUNNERS = _child('runner', MMENGINE_RUNNERS, 'engine.hooks')
RUNNER_CONSTRUCTORS = _child('runner constructor', MMENGINE_RUNNER_CONSTRUCTORS, 'engine.hooks')
LOOPS = _child('loop', MMENGINE_LOOPS, 'engine.hooks')
HOOKS = _child('hook', MMENGINE_HOOKS, 'engine.hooks')
DATASETS = _child('dataset', MMENGINE_DATASETS, 'datasets')
DATA_SAMPLERS = _child('data sampler', MMENGINE_DATA_SAMPLERS)
TRANSFORMS = _child('transform', MMENGINE_TRANSFORMS, 'datasets')
MODELS = _child('model', MMENGINE_MODELS, 'models')
MODEL_WRAPPERS = _child('model wrapper', MMENGINE_MODEL_WRAPPERS, 'engine.hooks')
WEIGHT_INITIALIZERS = _child('weight initializer', MMENGINE_WEIGHT_INITIALIZERS)
OPTIMIZERS = _child('optimizer', MMENGINE_OPTIMIZERS, 'engine.hooks')
OPTIM_WRAPPERS = _child('optim wrapper', MMENGINE_OPTIM_WRAPPERS, 'engine.hooks')
OPTIM_WRAPPER_CONSTRUCTORS = _child('optimizer wrapper constructor',
                                    MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, 'engine.hooks')
PARAM_SCHEDULERS = _child('parameter scheduler', MMENGINE_PARAM_SCHEDULERS, 'engine.hooks')
METRICS = _child('metric', MMENGINE_METRICS, 'evaluation')
EVALUATOR = _child('evaluator', MMENGINE_EVALUATOR)
TASK_UTILS = _child('task util', MMENGINE_TASK_UTILS)
VISUALIZERS = _child('visualizer', MMENGINE_VISUALIZERS)
VISBACKENDS = _child('vis_backend', MMENGINE_VISBACKENDS)
LOG_PROCESSORS = _child('log_processor', MMENGINE_LOG_PROCESSORS, 'engine.hooks')
INFERENCERS = _child('inferencer', MMENGINE_INFERENCERS)
FUNCTIONS = _child('function', MMENGINE_FUNCTIONS)
STRATEGIES = _child('strategy', MMENGINE_STRATEGIES)

# smilfit's own concepts -------------------------------------------------------
# Standalone roots (mmengine allows one child per scope under a parent, so they
# cannot all hang below MODELS). Components that nest them, e.g. a regressor
# holding a body model, build them with these registries explicitly.
BODY_MODELS = Registry('body model', scope=SCOPE, locations=['smilfit.body_models'])
LOSSES = Registry('loss', scope=SCOPE, locations=['smilfit.losses'])
HANDLERS = Registry('handler', scope=SCOPE, locations=['smilfit.handlers'])
REGISTRANTS = Registry('registrant', scope=SCOPE, locations=['smilfit.registrants'])
FITTING_HOOKS = Registry('fitting hook', scope=SCOPE, locations=['smilfit.registrants'])
CAMERAS = Registry('camera', scope=SCOPE, locations=['smilfit.cameras'])
RENDERERS = Registry('renderer', scope=SCOPE, locations=['smilfit.renderers'])
# A fitting stage's optimizer ``type`` -> the function that runs the stage
# (smilfit/registrants/stage_runners.py); types not registered here are torch optimizers.
STAGE_RUNNERS = Registry('stage runner', scope=SCOPE,
                         locations=['smilfit.registrants.stage_runners'])

__all__ = [
    'SCOPE', 'RUNNERS', 'RUNNER_CONSTRUCTORS', 'LOOPS', 'HOOKS', 'DATASETS', 'DATA_SAMPLERS',
    'TRANSFORMS', 'MODELS', 'MODEL_WRAPPERS', 'WEIGHT_INITIALIZERS', 'OPTIMIZERS',
    'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS', 'METRICS', 'EVALUATOR',
    'TASK_UTILS', 'VISUALIZERS', 'VISBACKENDS', 'LOG_PROCESSORS', 'INFERENCERS', 'FUNCTIONS',
    'STRATEGIES',
    'BODY_MODELS', 'LOSSES', 'HANDLERS', 'REGISTRANTS', 'FITTING_HOOKS', 'CAMERAS', 'RENDERERS',
    'STAGE_RUNNERS',
]

# Last, once every registry exists (smilfit.engine.hooks registers into them).
from smilfit.engine import compat as _compat  # noqa: E402,F401  (side effect: mmengine fixes)
