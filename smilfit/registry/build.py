"""Build a component from a config, or take it as built, with clear errors for typos.

:func:`build_module` is the one place where "a config dict or an already-built module" is
resolved for smilfit's own components. A config key the component's constructor does not
take is reported with the component's name, the closest accepted keyword and the list of
accepted ones, instead of a bare ``TypeError`` from deep inside mmengine.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Mapping, Optional, Tuple

from mmengine.registry import Registry

from smilfit.errors import SmilfitUserError

__all__ = ['build_module', 'constructor_keywords', 'UnknownOptionError']


class UnknownOptionError(SmilfitUserError, TypeError):
    """A config gives a component a keyword its constructor does not take (a typo, or an
    option of another component). A ``TypeError`` for callers that catch one; a user's
    error, so the tools print it as one line wherever it is found."""


def constructor_keywords(cls: type) -> Optional[Tuple[str, ...]]:
    """Keyword names ``cls(...)`` accepts, or ``None`` when it takes ``**kwargs``."""
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return None
    names = []
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            return None
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != 'self':
            names.append(p.name)
    return tuple(names)


def _nested_hint(cfg: Mapping[str, Any], key: str) -> str:
    """Where ``key`` (or a close spelling) is an option of a component nested in ``cfg``
    (a handler's ``loss``, say), the hint that names it, e.g. `` (did you mean
    'loss.sigma'?)``; else ''."""
    # Imported here: this module is imported while the registries are being defined.
    from smilfit import registry as registries
    own = [getattr(registries, name) for name in
           ('LOSSES', 'HANDLERS', 'BODY_MODELS', 'CAMERAS', 'RENDERERS', 'REGISTRANTS')]
    for field, value in cfg.items():
        if not (isinstance(value, Mapping) and isinstance(value.get('type'), str)):
            continue
        cls = next((c for c in (r.get(value['type']) for r in own) if isinstance(c, type)),
                   None)
        accepted = constructor_keywords(cls) if cls is not None else None
        if not accepted:
            continue
        if key in accepted:
            return f" (an option of its {field}: set {field}.{key})"
        close = difflib.get_close_matches(key, accepted, n=1)
        if close:
            return f" (did you mean '{field}.{close[0]}'?)"
    return ''


def build_module(registry: Registry, cfg: Any, what: str = 'component',
                 default_args: Optional[Mapping[str, Any]] = None) -> Any:
    """``cfg`` built from ``registry`` when it is a mapping with ``type``; anything else
    (an already-built object) is returned as it is.

    Args:
        registry: where ``cfg['type']`` is looked up.
        cfg: a config mapping or a built object.
        what: how to name the component in messages, e.g. ``'handler'``.
        default_args: keywords added where ``cfg`` does not set them.

    Raises:
        KeyError: the type is not registered (mmengine's message).
        UnknownOptionError: a keyword the constructor does not accept (a ``TypeError``);
            the message names the component, the keyword, the closest accepted one and
            all of them.
    """
    if not isinstance(cfg, Mapping):
        return cfg
    cfg = dict(cfg)
    for key, value in (default_args or {}).items():
        cfg.setdefault(key, value)
    type_ = cfg.get('type')
    cls = registry.get(type_) if isinstance(type_, str) else type_
    if isinstance(cls, type):
        accepted = constructor_keywords(cls)
        unknown = [k for k in cfg if k != 'type' and accepted is not None and k not in accepted]
        if unknown:
            label = f"{what} {cfg['name']!r}" if isinstance(cfg.get('name'), str) else what
            key = unknown[0]
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else _nested_hint(cfg, key)
            raise UnknownOptionError(f"{label} ({cls.__name__}) has no option '{key}'{hint}; "
                                     f"it takes {', '.join(accepted)}")
    return registry.build(cfg)
