"""The house rules of docs/architecture.md, checked on the source: imports point down its
layer table (module-level and function-level imports alike), the sub-packages form no
import circle, and no module grows past the size a reader can hold."""
import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / 'smilfit'
DOC = ROOT / 'docs' / 'architecture.md'

#: The layers of docs/architecture.md, top to bottom (its table lists the same packages).
LAYERS = [
    ('entry points', {'cli'}),
    ('workflows', {'apis'}),
    ('fitting and learning', {'registrants', 'models', 'model_learning', 'registration'}),
    ('observation adapters', {'handlers'}),
    ('output', {'visualization', 'evaluation'}),
    ('data', {'datasets'}),
    ('pure maths', {'losses', 'body_models', 'cameras', 'renderers'}),
    ('geometry', {'ops'}),
    ('glue', {'registry', 'engine', 'utils', 'errors', 'version', '__init__'}),
]
MAX_LINES = 600
MAX_SOLVER_LINES = 500


def _room(path: Path, root: Path = PACKAGE) -> str:
    """The sub-package (or top-level module) of a file under ``root`` (smilfit/)."""
    return path.relative_to(root).parts[0].removesuffix('.py')


def imports(root: Path = PACKAGE):
    """``(room, imported room, file, line, at module level)`` for every import of another
    smilfit room in ``root``'s files."""
    found = []
    for path in sorted(root.rglob('*.py')):
        rel = path.relative_to(root).parts
        room = _room(path, root)
        tree = ast.parse(path.read_text())

        def visit(node, nested):
            for child in ast.iter_child_nodes(node):
                targets = []
                if isinstance(child, ast.ImportFrom):
                    if child.level:   # relative: resolve against the file's package
                        base = list(rel[:-1])[:len(rel) - child.level]
                        parts = base + (child.module.split('.') if child.module else [])
                        if child.module is None and not parts:
                            parts = [a.name for a in child.names]
                        targets = parts[:1]
                    elif child.module == 'smilfit':
                        targets = [a.name for a in child.names]
                    elif child.module and child.module.startswith('smilfit.'):
                        targets = [child.module.split('.')[1]]
                elif isinstance(child, ast.Import):
                    targets = [a.name.split('.')[1] for a in child.names
                               if a.name.startswith('smilfit.')]
                for target in targets:
                    if target != room:
                        found.append((room, target, path.relative_to(root.parent),
                                      child.lineno, not nested))
                inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                if isinstance(child, ast.If) and isinstance(child.test, ast.Name) \
                        and child.test.id == 'TYPE_CHECKING':
                    inner = True
                visit(child, inner)
        visit(tree, False)
    return found


def _rank():
    return {room: i for i, (_, rooms) in enumerate(LAYERS) for room in rooms}


def test_every_room_has_a_layer():
    rooms = {_room(p) for p in PACKAGE.rglob('*.py')}
    assert rooms == set(_rank()), (sorted(rooms - set(_rank())), sorted(set(_rank()) - rooms))


def test_the_documented_table_lists_the_same_rooms():
    text = DOC.read_text()
    table = text[text.index('| layer |'):]
    table = table[:table.index('\n\n')]
    for name, rooms in LAYERS:
        row = next((line for line in table.splitlines() if line.startswith(f'| {name} |')),
                   None)
        assert row is not None, name
        for room in rooms - {'__init__', 'errors', 'version'}:
            assert re.search(rf'`(smilfit/)?{room}/', row), (name, room)


def test_imports_point_down_the_layer_table():
    rank = _rank()
    upward = [f'{path}:{line}: {room} ({LAYERS[rank[room]][0]}) imports {target} '
              f'({LAYERS[rank[target]][0]})'
              for room, target, path, line, _ in imports() if rank[target] < rank[room]]
    assert not upward, '\n'.join(upward)


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The checker itself: a handler importing a dataset module is reported."""
    (tmp_path / 'handlers').mkdir()
    (tmp_path / 'handlers' / 'bad.py').write_text(
        'def f():\n    from smilfit.datasets.joint_lookup import read_joint_lookup\n')
    (tmp_path / 'handlers' / 'good.py').write_text('from ..losses import x\n')
    found = [(r, t, top) for r, t, _, _, top in imports(tmp_path)]
    assert found == [('handlers', 'datasets', False), ('handlers', 'losses', True)]


def test_rooms_form_no_import_circle():
    """Between rooms (the glue layer counted as one: the registries and the mmengine fixes
    it loads belong together), module-level imports form no circle."""
    glue = LAYERS[-1][1]
    graph = defaultdict(set)
    for room, target, _, _, top in imports():
        a, b = ('glue' if room in glue else room), ('glue' if target in glue else target)
        if top and a != b:
            graph[a].add(b)
    state = {}

    def cycle_from(node, path):
        state[node] = 'open'
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 'open':
                return path + [node, nxt]
            if nxt not in state:
                found = cycle_from(nxt, path + [node])
                if found:
                    return found
        state[node] = 'done'
        return None
    for node in sorted(graph):
        if node not in state:
            assert cycle_from(node, []) is None


@pytest.mark.parametrize('limit,where', [(MAX_LINES, PACKAGE),
                                         (MAX_SOLVER_LINES, PACKAGE / 'registrants' / 'solver')])
def test_no_module_is_too_long_to_read(limit, where):
    long = {str(p.relative_to(ROOT)): n for p in where.rglob('*.py')
            if (n := len(p.read_text().splitlines())) > limit}
    assert not long, long
