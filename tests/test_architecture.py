"""The house keeps its shape: imports run one way (scripts -> library, and inside the library from a
room only to the rooms below it, as docs/development.md draws them), no function grows past 60
lines, the root stays small and imitate_episodes.py stays a command line."""
import ast
import os

from tests.helpers import ROOT

# The rooms from the top down (docs/development.md); a module may import its own room and lower ones.
LAYERS = (
    ('cli',),
    ('evaluation', 'recording'),
    ('training', 'deploy'),
    ('checkpoints',),
    ('policies', 'real_robot'),
    ('simulation',),
    ('formats', 'sim_env', 'ee_sim_env', 'scripted_policy', 'detr'),
    ('so101_sim',),
    ('common',),
    ('tasks',),
    ('constants',),
)
LEVEL = {room: len(LAYERS) - i for i, rooms in enumerate(LAYERS) for room in rooms}
SIDEWAYS = {('ee_sim_env', 'sim_env')}  # the EE environment reuses the joint one's observation and reward
MAX_FUNCTION_LINES = 60
MAX_ROOT_FILES = 20
MAX_SCRIPT_LINES = 300
SKIP = {'.venv', '.git', 'tests', 'bench', 'docs', '__pycache__'}


def library_files():
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in SKIP and not d.startswith('.'))
        for name in sorted(files):
            if name.endswith('.py'):
                yield os.path.relpath(os.path.join(folder, name), ROOT)


def room_of(path):
    return path.split(os.sep)[0].removesuffix('.py')


def imported_rooms(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split('.')[0]


def test_imports_run_one_way():
    scripts = {f[:-3] for f in os.listdir(ROOT) if f.endswith('.py')} - set(LEVEL)
    wrong = []
    for path in library_files():
        room = room_of(path)
        if room in scripts:
            continue
        for target in set(imported_rooms(ast.parse(open(os.path.join(ROOT, path)).read()))):
            if target in scripts:
                wrong.append(f'{path} imports the script {target}.py')
            elif target in LEVEL and target != room and (room, target) not in SIDEWAYS \
                    and LEVEL[target] >= LEVEL[room]:
                wrong.append(f'{path} ({room}) imports {target}, which is not below it')
    assert wrong == []
    assert set(LEVEL) <= {room_of(p) for p in library_files()}  # every room named here exists


def test_no_long_functions_and_a_small_root():
    long = []
    for path in library_files():
        for node in ast.walk(ast.parse(open(os.path.join(ROOT, path)).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long.append(f'{path}:{node.lineno} {node.name}')
    assert long == []
    assert len([f for f in os.listdir(ROOT) if f.endswith('.py')]) <= MAX_ROOT_FILES
    assert len(open(os.path.join(ROOT, 'imitate_episodes.py')).read().splitlines()) <= MAX_SCRIPT_LINES


def compared_constants(tree):
    """(line, string) of each string constant a comparison (==, !=, in) is made with."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                items = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                yield from ((node.lineno, item.value) for item in items
                            if isinstance(item, ast.Constant) and isinstance(item.value, str))


def test_no_code_outside_policies_tells_a_policy_by_its_name():
    from policies.registry import policy_names
    names = set(policy_names())
    paths = [p for p in library_files() if room_of(p) != 'policies']
    paths += [os.path.join('bench', f) for f in sorted(os.listdir(os.path.join(ROOT, 'bench'))) if f.endswith('.py')]
    found = [f'{path}:{line} compares with {value!r}' for path in paths
             for line, value in compared_constants(ast.parse(open(os.path.join(ROOT, path)).read()))
             if value in names]
    assert found == []  # a policy answers for itself (policies/base.py's hooks)


def test_no_code_tells_a_robot_or_a_simulation_by_the_task_name():
    """A task's simulation and robot come from its config (simulation/, real_robot/robots/)."""
    found = []
    for path in library_files():
        for node in ast.walk(ast.parse(open(os.path.join(ROOT, path)).read())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith('is_') and node.name.endswith('_task'):
                found.append(f'{path}:{node.lineno} defines {node.name}')
            if isinstance(node, ast.Call) and getattr(node.func, 'attr', None) == 'startswith' and any(
                    isinstance(a, ast.Constant) and str(a.value).startswith(('sim_', 'so')) for a in node.args):
                found.append(f'{path}:{node.lineno} tests a name\'s prefix')
    assert found == []
