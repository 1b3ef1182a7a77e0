"""smilfit's registries: children of mmengine's roots, own roots, plugins, helpers."""
import sys
import textwrap
from collections import OrderedDict

import mmengine.registry as mm_registry
import pytest
import torch
from mmengine import Config
from mmengine.hooks import CheckpointHook
from mmengine.optim import MultiStepLR, OptimWrapper
from mmengine.registry import DefaultScope, Registry

import smilfit.registry as registry
from smilfit.registry import (HOOKS, LOSSES, OPTIM_WRAPPERS, OPTIMIZERS, PARAM_SCHEDULERS,
                              SCOPE)
from smilfit.utils import register_all_modules
from smilfit.utils import setup_env

OWN_ROOTS = ('BODY_MODELS', 'LOSSES', 'HANDLERS', 'REGISTRANTS', 'FITTING_HOOKS', 'CAMERAS',
             'RENDERERS', 'STAGE_RUNNERS')
CHILDREN = tuple(n for n in registry.__all__ if n not in OWN_ROOTS + ('SCOPE',))


@pytest.fixture(autouse=True)
def _no_default_scope(monkeypatch):
    """Each test starts with no current default scope and leaves none behind."""
    monkeypatch.setattr(DefaultScope, '_instance_dict', OrderedDict())


@pytest.fixture
def params():
    return [torch.zeros(3, requires_grad=True)]


@pytest.mark.parametrize('name', CHILDREN)
def test_child_has_smilfit_scope_and_mmengine_parent(name):
    child = getattr(registry, name)
    root = getattr(mm_registry, name)
    assert isinstance(child, Registry)
    assert child.scope == SCOPE == 'smilfit'
    assert child.parent is root
    assert root.parent is None and root.scope == 'mmengine'
    assert root.children[SCOPE] is child


def test_every_mmengine_root_has_a_smilfit_child():
    roots = {n for n, v in vars(mm_registry).items() if isinstance(v, Registry)}
    missing = {n for n in roots if SCOPE not in getattr(mm_registry, n).children}
    assert not missing, missing
    assert roots <= set(CHILDREN)


@pytest.mark.parametrize('name', OWN_ROOTS)
def test_own_roots_are_standalone(name):
    reg = getattr(registry, name)
    assert reg.scope == SCOPE and reg.parent is None


def test_child_builds_torch_optimizers(params):
    adam = OPTIMIZERS.build(dict(type='Adam', params=params, lr=0.1))
    assert type(adam) is torch.optim.Adam and adam.defaults['lr'] == 0.1
    lbfgs = OPTIMIZERS.build(dict(type='LBFGS', params=params, line_search_fn='strong_wolfe'))
    assert type(lbfgs) is torch.optim.LBFGS


def test_child_builds_mmengine_builtins(params):
    optimizer = torch.optim.SGD(params, lr=1.0)
    scheduler = PARAM_SCHEDULERS.build(
        dict(type='MultiStepLR', optimizer=optimizer, milestones=[1], gamma=0.5))
    assert type(scheduler) is MultiStepLR
    wrapper = OPTIM_WRAPPERS.build(dict(type='OptimWrapper', optimizer=optimizer))
    assert type(wrapper) is OptimWrapper
    assert type(HOOKS.build(dict(type='CheckpointHook', interval=1))) is CheckpointHook


def test_child_builds_under_smilfit_default_scope(params):
    with DefaultScope.overwrite_default_scope(SCOPE):
        assert type(OPTIMIZERS.build(dict(type='LBFGS', params=params))) is torch.optim.LBFGS
        # mmengine's root resolves through the smilfit child in the smilfit scope.
        assert type(mm_registry.OPTIMIZERS.build(dict(type='Adam', params=params))) \
            is torch.optim.Adam


def test_unknown_type_names_it():
    with pytest.raises(KeyError, match='NoSuchLoss'):
        LOSSES.build(dict(type='NoSuchLoss'))
    with pytest.raises(KeyError, match='NoSuchOptimizer'):
        OPTIMIZERS.build(dict(type='NoSuchOptimizer', params=[torch.zeros(1)]))


def test_plugin_via_custom_imports(tmp_path, monkeypatch):
    # Registration is global: work on copies of LOSSES' table and of sys.modules' entry.
    monkeypatch.setattr(LOSSES, '_module_dict', dict(LOSSES._module_dict))
    monkeypatch.delitem(sys.modules, 'my_plugin_mod', raising=False)
    (tmp_path / 'my_plugin_mod.py').write_text(textwrap.dedent("""\
        import torch.nn as nn

        from smilfit.registry import LOSSES


        @LOSSES.register_module()
        class MyPluginLoss(nn.Module):
            def __init__(self, weight=1.0):
                super().__init__()
                self.weight = weight
        """))
    cfg_file = tmp_path / 'plugin_cfg.py'
    cfg_file.write_text(textwrap.dedent("""\
        custom_imports = dict(imports=['my_plugin_mod'], allow_failed_imports=False)
        loss = dict(type='MyPluginLoss', weight=2.5)
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        cfg = Config.fromfile(str(cfg_file))  # performs custom_imports
        plugin = sys.modules['my_plugin_mod']
        loss = LOSSES.build(cfg.loss)
        assert type(loss) is plugin.MyPluginLoss
        assert loss.weight == 2.5
        assert LOSSES.get('MyPluginLoss') is plugin.MyPluginLoss
    finally:
        sys.modules.pop('my_plugin_mod', None)


def test_plugin_import_failure_is_loud(tmp_path):
    cfg_file = tmp_path / 'bad_plugin_cfg.py'
    cfg_file.write_text(
        "custom_imports = dict(imports=['no_such_plugin_mod_xyz'], allow_failed_imports=False)\n")
    with pytest.raises(ImportError):
        Config.fromfile(str(cfg_file))


def test_register_all_modules_sets_default_scope():
    assert DefaultScope.get_current_instance() is None
    register_all_modules(init_default_scope=False)
    assert DefaultScope.get_current_instance() is None
    for package in setup_env.REGISTERING_PACKAGES:
        assert package in sys.modules
    register_all_modules()
    assert DefaultScope.get_current_instance().scope_name == SCOPE
    register_all_modules()  # again: still smilfit, no new instance needed
    assert DefaultScope.get_current_instance().scope_name == SCOPE


def test_register_all_modules_switches_from_another_scope():
    DefaultScope.get_instance('other-experiment', scope_name='mmengine')
    register_all_modules()
    assert DefaultScope.get_current_instance().scope_name == SCOPE


def test_register_all_modules_propagates_import_errors(monkeypatch):
    monkeypatch.setattr(setup_env, 'REGISTERING_PACKAGES',
                        setup_env.REGISTERING_PACKAGES + ('smilfit._no_such_package',))
    with pytest.raises(ImportError):
        register_all_modules(init_default_scope=False)


@pytest.mark.parametrize('name', OWN_ROOTS + CHILDREN)
def test_locations_are_where_modules_register(name):
    """Each registry's ``locations`` names the sub-packages that register into it: every
    registered smilfit module lives below one of them, and every location holds one, except
    ``smilfit.engine.hooks`` on the runner-side registries: building a Runner, loop or
    optimizer in the smilfit scope imports it so that its mmengine compatibility fixes are
    applied."""
    register_all_modules(init_default_scope=False)
    reg = getattr(registry, name)
    modules = {obj.__module__ for obj in reg.module_dict.values()
               if obj.__module__.startswith('smilfit.')}
    locations = list(reg._locations)
    stray = {m for m in modules if not any(m == loc or m.startswith(loc + '.') for loc in locations)}
    assert not stray, f'{name}: registered outside its locations {locations}: {stray}'
    unused = [loc for loc in locations if loc != 'smilfit.engine.hooks'
              and not any(m == loc or m.startswith(loc + '.') for m in modules)]
    assert not unused, f'{name}: locations that register nothing: {unused}'


@pytest.mark.parametrize('key, hint', [
    ('sigmaa', "(did you mean 'loss.sigma'?)"),          # a typo of the loss's option
    ('sigma', '(an option of its loss: set loss.sigma)'),  # the right option, one level up
])
def test_an_option_of_a_nested_component_is_pointed_to(key, hint):
    from smilfit.registry import HANDLERS
    from smilfit.registry.build import UnknownOptionError, build_module
    cfg = dict(type='Keypoint2DHandler', name='kp2d',
               loss=dict(type='KeypointMSELoss', robust='gmof'), **{key: 3.0})
    with pytest.raises(UnknownOptionError) as info:
        build_module(HANDLERS, cfg, 'handler')
    assert f"handler 'kp2d' (Keypoint2DHandler) has no option '{key}' {hint}; it takes " \
        in str(info.value)


def test_components_given_as_config_or_module_are_built_in_one_place():
    """Every "a config or an already built module" argument goes through build_module, so
    a misspelt option is the same one-line error everywhere (a fitting hook here); no
    module builds such an argument inline."""
    import re
    from pathlib import Path

    from smilfit.registrants.hooks import build_hooks
    from smilfit.registry.build import UnknownOptionError
    with pytest.raises(UnknownOptionError, match="fitting hook .*has no option 'evry'"):
        build_hooks([dict(type='LossHistoryHook', evry=2)])
    inline = re.compile(
        r'[A-Z_]+\.build\([^\n]*\bif isinstance\('                 # X.build(c) if isinstance
        r'|isinstance\([^)]*\)\s*else\s*(\\\s*)?[A-Z_]+\.build\('    # ... else X.build(c)
        r'|if isinstance\([^)]*Mapping\):\s*\n\s*\w+ = [A-Z_]+\.build\(')
    root = Path(__file__).resolve().parents[2] / 'smilfit'
    found = [str(p.relative_to(root)) for p in root.rglob('*.py')
             if p.name != 'build.py' and inline.search(p.read_text())]
    assert not found, found
