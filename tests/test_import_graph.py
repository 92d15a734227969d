"""The import graph of l2l_tf has no cycle, and every module imports in a fresh interpreter.

The graph is read from the source (ast), so imports inside functions (the lazy imports that
hide a cycle from Python) count as much as those at the top. A module's implicit import of its
parent packages is not an edge (Python runs a package's __init__ before its submodules); an
__init__ that imports a submodule is an ordinary edge.
"""

import ast
import json
import os
import subprocess
import sys

import pytest

import repo_paths

PACKAGE_ROOT = repo_paths.ROOT


def module_files(root, package):
  """{module name: path} of every .py file of `package` below `root`."""
  modules = {}
  for directory, _, files in os.walk(os.path.join(root, package)):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        parts = os.path.relpath(path, root)[: -len(".py")].split(os.sep)
        if parts[-1] == "__init__":
          parts = parts[:-1]
        modules[".".join(parts)] = path
  return modules


def _imported_modules(tree, module, is_package, modules):
  """The modules of `modules` that an ast imports anywhere in it (relative imports resolved)."""
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = module.split(".")
        anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
        base = ".".join(anchor + ([base] if base else []))
      for alias in node.names:
        submodule = f"{base}.{alias.name}"
        yield submodule if submodule in modules else base  # else a name defined in `base`


def import_graph(root, package):
  """{module: set of package modules it imports} read from the source files."""
  modules = module_files(root, package)
  graph = {}
  for module, path in modules.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    imported = _imported_modules(tree, module, path.endswith("__init__.py"), modules)
    graph[module] = {name for name in imported if name in modules and name != module}
  return graph


def find_cycle(graph):
  """One import cycle as a list of modules [a, b, ..., a], or None."""
  state = {}  # module -> "active" while on the DFS stack, "done" after

  def visit(module, stack):
    state[module] = "active"
    stack.append(module)
    for target in sorted(graph.get(module, ())):
      if state.get(target) == "active":
        return stack[stack.index(target) :] + [target]
      if target not in state:
        cycle = visit(target, stack)
        if cycle:
          return cycle
    stack.pop()
    state[module] = "done"
    return None

  for module in sorted(graph):
    if module not in state:
      cycle = visit(module, [])
      if cycle:
        return cycle
  return None


def test_l2l_tf_has_no_import_cycle():
  graph = import_graph(PACKAGE_ROOT, "l2l_tf")
  assert len(graph) > 30  # every module was read
  assert "l2l_tf.registry" in graph["l2l_tf.cells.base"]  # edges were read
  cycle = find_cycle(graph)
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_registry_imports_nothing_from_l2l_tf():
  # Everything registers into it, so it must be a leaf of the graph.
  assert not import_graph(PACKAGE_ROOT, "l2l_tf")["l2l_tf.registry"]


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


@pytest.mark.parametrize(
  "lazy_import",
  [
    "  from toy import a\n",  # absolute, inside a function
    "  from . import a\n",  # relative
    "  import toy.a\n",
  ],
)
def test_a_lazy_import_cycle_is_found(tmp_path, lazy_import):
  _write(str(tmp_path / "toy" / "__init__.py"), "")
  _write(str(tmp_path / "toy" / "a.py"), "from toy import b\n")
  _write(str(tmp_path / "toy" / "b.py"), "def f():\n" + lazy_import)
  _write(str(tmp_path / "toy" / "c.py"), "from toy import a\n")
  graph = import_graph(str(tmp_path), "toy")
  assert find_cycle(graph) == ["toy.a", "toy.b", "toy.a"]
  _write(str(tmp_path / "toy" / "b.py"), "import os\n")  # the cycle broken
  assert find_cycle(import_graph(str(tmp_path), "toy")) is None


def test_every_module_imports_in_a_fresh_interpreter_with_complete_registry():
  modules = sorted(module_files(PACKAGE_ROOT, "l2l_tf"))
  # registry alone first: importing it must run l2l_tf/__init__.py, which fills every table.
  program = (
    "import importlib, json\n"
    "from l2l_tf import registry\n"
    "print(json.dumps([list(registry.CELLS), list(registry.PROBLEMS),\n"
    "                  list(registry.BASELINES), list(registry.PREPROCESSORS)]))\n"
    f"modules = [importlib.import_module(name) for name in {modules!r}]\n"
    "print('imported', len(modules))\n"
  )
  env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(
    [sys.executable, "-c", program],
    capture_output=True,
    text=True,
    env=env,
    cwd=PACKAGE_ROOT,
    timeout=300,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  tables, imported = result.stdout.splitlines()[-2:]
  cells, problems, baselines, preprocessors = json.loads(tables)
  assert {"lstm", "lstm_gac", "ntm_bfgs", "ntm_lbfgs"} <= set(cells)
  assert {"quadratic", "mnist", "neural_art", "cifar10", "cifar5", "cifar2"} <= set(problems)
  assert {"sgd", "rmsprop", "adam", "nag"} <= set(baselines)
  assert {"identity", "scale", "log_sign"} <= set(preprocessors)
  assert imported == f"imported {len(modules)}"
