"""A run's config carried in a checkpoint as data, never as code.

mmengine stores a config in a checkpoint as Python text (``meta['cfg']``); turning that back
into a config means executing it, so a checkpoint from elsewhere could run anything on the
machine that loads it. smilfit instead stores the resolved config as plain data
(``meta['smilfit']['config_data']``: dicts with string or number keys, lists, tuples, strings,
numbers, booleans and None, which ``torch.load(weights_only=True)`` reads without running
anything) and rebuilds a :class:`mmengine.config.Config` from it. Stored Python text is
never executed.

Plugins: a config's ``custom_imports`` names modules to import, i.e. code to run. From a
checkpoint only smilfit's own modules are accepted (they are imported anyway); any other
module is refused with a message telling the user to pass the config file, which is theirs
to trust.

Component types: mmengine's ``Registry.get`` falls back to importing any dotted name it
does not know (``type='subprocess.run'`` is imported, and building calls it with the
config's keywords), so data naming a type could run anything. Every ``type`` in stored
config data must name a component registered in smilfit's registries or their mmengine
parents (:func:`check_component_types`); it is looked up without importing anything.
"""
from __future__ import annotations

from numbers import Real
from typing import Any, Mapping

from smilfit.errors import SmilfitUserError

__all__ = ['ConfigDataError', 'config_to_data', 'config_from_data', 'check_component_types',
           'registered_names']


class ConfigDataError(SmilfitUserError, ValueError):
    """A config cannot be stored as data, or stored data is not a valid config."""


def _plain(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Real) and not hasattr(value, 'shape'):
        return value if isinstance(value, (int, float)) else float(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, f'{where}[{i}]') for i, v in enumerate(value))
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, (str, int, float)) or isinstance(key, bool):
                raise ConfigDataError(f'config entry {where} has the key {key!r}; config keys '
                                      'must be strings or numbers to be stored in a checkpoint')
            out[key] = _plain(item, f'{where}.{key}' if where else key)
        return out
    raise ConfigDataError(
        f'config entry {where or "<root>"} is a {type(value).__name__}; a config stored in '
        'a checkpoint holds only strings, numbers, booleans, None, lists, tuples and dicts '
        "(name registered types by string, e.g. type='SMILModel')")


def config_to_data(cfg: Any) -> dict:
    """The resolved config (a ``Config`` or a mapping) as plain, checkpoint-safe data.

    Raises:
        ConfigDataError: an entry that is not plain data (a class, a function...), named.
    """
    data = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
    return _plain(data, '')


def _check_imports(data: dict, source: str) -> dict:
    spec = data.get('custom_imports')
    if spec is None:
        return data
    imports = spec.get('imports') if isinstance(spec, Mapping) else None
    if isinstance(imports, str):
        imports = [imports]
    if not isinstance(imports, (list, tuple)) or not all(isinstance(m, str) for m in imports):
        raise ConfigDataError(f'{source}: custom_imports must be dict(imports=[module names])')
    foreign = [m for m in imports if m != 'smilfit' and not m.startswith('smilfit.')]
    if foreign:
        raise ConfigDataError(
            f'{source}: its config imports the plugin module(s) {foreign}. smilfit does not '
            'import modules named by a checkpoint (that would run their code); pass the '
            'config file that names them, e.g. tools/test.py CONFIG CHECKPOINT')
    # smilfit's own modules are registered by register_all_modules already.
    return {k: v for k, v in data.items() if k != 'custom_imports'}


def registered_names() -> frozenset:
    """The names of every component registered in smilfit's registries and their mmengine
    parents, each also with its scope prefix (``'smilfit.X'``, ``'mmengine.X'``). Imports
    the registries' own locations (smilfit's modules), nothing a config names."""
    from mmengine.registry import Registry

    from smilfit import registry as registries
    names = set()
    for registry in list(vars(registries).values()):
        if not isinstance(registry, Registry):
            continue
        registry.import_from_location()
        node = registry
        while node is not None:
            names.update(node.module_dict)
            names.update(f'{node.scope}.{name}' for name in node.module_dict)
            node = node.parent
    return frozenset(names)


def check_component_types(data: Any, source: str) -> None:
    """Refuse stored config data whose ``type`` entries name anything but registered
    components (:func:`registered_names`).

    Raises:
        ConfigDataError: the first such entry, by its place in the config.
    """
    known = None

    def walk(value: Any, where: str) -> None:
        nonlocal known
        if isinstance(value, Mapping):
            for key, item in value.items():
                place = f'{where}.{key}' if where else str(key)
                if key == 'type':
                    known = registered_names() if known is None else known
                    if not (isinstance(item, str) and item in known):
                        raise ConfigDataError(
                            f'{source}: {place} = {item!r} names no registered smilfit or '
                            'mmengine component. A stored config may only name registered '
                            'components (any other name would be imported and called, '
                            'running code); pass the config file that names it')
                else:
                    walk(item, place)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f'{where}[{i}]')
    walk(data, '')


def config_from_data(data: Any, source: str = 'checkpoint'):
    """A :class:`mmengine.config.Config` rebuilt from :func:`config_to_data` output.

    Raises:
        ConfigDataError: ``data`` is not a dict of plain values, imports foreign modules,
            or names a type that is not a registered component.
    """
    from mmengine.config import Config
    if not isinstance(data, Mapping):
        raise ConfigDataError(f'{source}: the stored config is a {type(data).__name__}, '
                              'not a dict')
    try:
        plain = _plain(data, '')
    except ConfigDataError as err:
        raise ConfigDataError(f'{source}: {err}') from None
    plain = _check_imports(plain, source)
    check_component_types(plain, source)
    return Config(plain)
