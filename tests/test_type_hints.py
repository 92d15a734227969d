"""The public API is annotated: every public function and method behind l2l_tf.__all__.

Walks each class, function and module that l2l_tf.__all__ names; for a class, every public
method (and the constructor, and properties) that a class of l2l_tf defines along its MRO
(methods inherited from Keras are Keras's business); for a module, its own public classes and
functions. Each needs an annotation on every parameter (bar self/cls and *args/**kwargs) and
on its return, and typing.get_type_hints must resolve them (a name missing from the module
raises NameError there, not in a user's type checker).
"""

import inspect
import types
import typing

import l2l_tf

_SKIPPED_KINDS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _is_public(name):
  return not name.startswith("_") or name == "__init__"


def _defined_in_l2l_tf(value):
  module = getattr(value, "__module__", None) or ""
  return module == "l2l_tf" or module.startswith("l2l_tf.")


def _class_functions(cls):
  """{qualified name: (function, whether its first parameter is self/cls)} of a class."""
  found = {}
  for klass in reversed(cls.__mro__):  # a subclass's override replaces its base's entry
    if not _defined_in_l2l_tf(klass):
      continue
    for name, member in vars(klass).items():
      if not _is_public(name):
        continue
      if isinstance(member, staticmethod):
        found[name] = (f"{klass.__qualname__}.{name}", member.__func__, False)
      elif isinstance(member, classmethod):
        found[name] = (f"{klass.__qualname__}.{name}", member.__func__, True)
      elif isinstance(member, property):
        found[name] = (f"{klass.__qualname__}.{name}", member.fget, True)
      elif inspect.isfunction(member):
        found[name] = (f"{klass.__qualname__}.{name}", member, True)
  return {qualified: (function, bound) for qualified, function, bound in found.values()}


def _public_api_functions():
  """{qualified name: (function, bound)} of everything l2l_tf.__all__ exposes."""
  found = {}

  def add(value):
    if inspect.isclass(value):
      found.update(_class_functions(value))
    elif inspect.isfunction(value):
      found[f"{value.__module__}.{value.__qualname__}"] = (value, False)

  for name in l2l_tf.__all__:
    value = getattr(l2l_tf, name)
    if isinstance(value, types.ModuleType):
      for member_name, member in vars(value).items():
        if _is_public(member_name) and getattr(member, "__module__", None) == value.__name__:
          add(member)
    else:
      add(value)
  return found


def _annotation_problems(qualified, function, bound):
  """What is wrong with one function's annotations (empty if nothing)."""
  function = inspect.unwrap(function)
  try:
    hints = typing.get_type_hints(function)
  except Exception as e:  # pylint: disable=broad-except  # any failure to resolve is the finding
    return [f"{qualified}: annotations do not resolve ({type(e).__name__}: {e})"]
  parameters = list(inspect.signature(function).parameters.values())
  if bound:
    parameters = parameters[1:]
  missing = [p.name for p in parameters if p.kind not in _SKIPPED_KINDS and p.name not in hints]
  problems = [f"{qualified}: parameter {name!r} not annotated" for name in missing]
  if "return" not in hints:
    problems.append(f"{qualified}: return not annotated")
  return problems


def test_every_public_function_and_method_is_annotated_and_resolves():
  problems = [
    problem
    for qualified, (function, bound) in sorted(_public_api_functions().items())
    for problem in _annotation_problems(qualified, function, bound)
  ]
  assert not problems, f"{len(problems)} missing or broken annotations:\n" + "\n".join(problems)


def test_the_walk_covers_the_documented_workflow():
  checked = set(_public_api_functions())
  for name in (
    "MetaTrainer.__init__",
    "MetaTrainer.train",
    "MetaTrainingConfig.validate",
    "KerasModelProblem.__init__",
    "KerasModelProblem.loss",
    "Problem.with_batch_size",  # inherited by every problem
    "LearnedOptimizer.__init__",
    "LearnedOptimizer.from_saved_model",
    "LearnedOptimizer.rule",  # a property
    "CoordinatewiseLSTM.call",
    "NTMLBFGS.__init__",
    "LearnedUpdateRule.step",
    "Adam.step",  # a class of the update_rules module
    "l2l_tf.optimizer_format.load_rule",
    "l2l_tf.export.export_saved_model",
  ):
    assert name in checked, name
  # Keras's own methods are not walked.
  assert "LearnedOptimizer.apply_gradients" not in checked


def test_the_check_flags_missing_and_unresolvable_annotations():
  def unannotated(self, x, *args, y: int = 0, **kwargs):
    return x

  def unresolvable(x: "NoSuchType") -> None:  # noqa: F821
    del x

  def complete(self, x: int, *args: int, **kwargs: str) -> int:
    return x

  assert _annotation_problems("f", unannotated, True) == [
    "f: parameter 'x' not annotated",
    "f: return not annotated",
  ]
  assert (
    "annotations do not resolve (NameError" in _annotation_problems("g", unresolvable, False)[0]
  )
  assert not _annotation_problems("h", complete, True)
