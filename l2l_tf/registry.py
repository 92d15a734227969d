"""Every name the package answers to: one table each of cells, problems, baselines, preprocessors.

Each table maps a name to a factory, and is filled where the factory is defined, by one
declaration line:

    @registry.CELLS.register("lstm")
    class CoordinatewiseLSTM(base.LearnedOptimizerCell):

This module imports nothing from l2l_tf, so any module may register without an import cycle.
The packages import their registering modules (l2l_tf/cells/__init__.py, l2l_tf/problems/
__init__.py) and l2l_tf/__init__.py imports the packages, update_rules and preprocessing;
Python runs it before any l2l_tf.<module>, so the tables are complete whenever code can reach
them. Adding a cell or a problem is one new module with its registration line, imported by its
package's __init__.py.
"""

import collections.abc
import dataclasses
from typing import Any, Callable, Dict, Generic, Iterator, Optional, Sequence, TypeVar

Factory = TypeVar("Factory", bound=Callable[..., Any])


class Registry(Generic[Factory]):
  """A name -> factory table; each name may declare attributes (e.g. a problem's family).

  Args:
    kind: what the names are, for error messages ("problem", "optimizer", ...).
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._factories: Dict[str, Factory] = {}
    self._attributes: Dict[str, Dict[str, Any]] = {}

  def register(self, name: Optional[str] = None, **attributes: Any) -> Callable[[Factory], Factory]:
    """A decorator that enters `factory` (a class or function) under `name`.

    Without a name, the factory's own `name` attribute is used (classes that carry their name,
    as update rules and preprocessors do, so that it is written once).
    """

    def declare(factory: Factory) -> Factory:
      nonlocal name
      name = factory.name if name is None else name
      if name in self._factories:
        raise ValueError(
          f"{self.kind} {name!r} is registered twice: {self._factories[name]!r} and {factory!r}"
        )
      self._factories[name] = factory
      self._attributes[name] = dict(attributes)
      return factory

    return declare

  def get(self, name: str) -> Factory:
    """The factory registered as `name`; an unknown name raises ValueError listing the names."""
    if name not in self._factories:
      raise ValueError(f"Unknown {self.kind} {name!r}; choose one of {sorted(self._factories)}")
    return self._factories[name]

  def attributes(self, name: str) -> Dict[str, Any]:
    """What `name` declared when it was registered ({} for an unknown name)."""
    return dict(self._attributes.get(name, {}))

  def select(self, **attributes: Any) -> "Selection":
    """The names that declared these attribute values, as a live set (read at each use)."""
    return Selection(self, attributes)

  def __contains__(self, name: object) -> bool:
    return name in self._factories

  def __iter__(self) -> Iterator[str]:
    return iter(self._factories)  # registration order

  def __len__(self) -> int:
    return len(self._factories)


class Selection(collections.abc.Set):
  """The names of a Registry whose declared attributes match, computed when it is read.

  Live, so that a module-level selection (CIFAR_PROBLEMS) sees names registered after it.
  """

  def __init__(self, table: Registry, attributes: Dict[str, Any]):
    self._table = table
    self._wanted = dict(attributes)

  def _names(self):
    return [
      name
      for name in self._table
      if all(self._table.attributes(name).get(key) == value for key, value in self._wanted.items())
    ]

  def __contains__(self, name: object) -> bool:
    return name in self._names()

  def __iter__(self) -> Iterator[str]:
    return iter(self._names())

  def __len__(self) -> int:
    return len(self._names())


# Learned-optimizer cells (l2l_tf.cells): classes taking the cell's keyword arguments.
CELLS: Registry = Registry("optimizer")
# Problem families (l2l_tf.problems): factory(split, batch_size, ProblemOptions) -> Problem.
# Attributes: cell_settings (the paper's cell arguments for the family), parameter_groups
# ({group: regex}: one optimizer network per group; the convnets' conv / fc), family
# ("cifar": the CIFAR-10 subsets, which take `labels`), default_batch_size.
PROBLEMS: Registry = Registry("problem")
# Hand-designed update rules (l2l_tf.update_rules): classes taking learning_rate=.
BASELINES: Registry = Registry("baseline optimizer")
# Gradient preprocessors (l2l_tf.preprocessing): classes taking their config's arguments.
PREPROCESSORS: Registry = Registry("preprocessing")

SPLITS = ("train", "validation", "test")
CIFAR_PROBLEMS = PROBLEMS.select(family="cifar")
# The paper's settings for problems that declare none: log/sign preprocessing, updates x 0.1.
DEFAULT_CELL_SETTINGS = {"preprocessing": "log_sign", "output_scale": 0.1}


@dataclasses.dataclass(frozen=True)
class ProblemOptions:
  """Options of the named problems; each family reads the ones that concern it."""

  dataset_source: str = "embedded"
  data_dir: Optional[str] = None
  hidden_sizes: Sequence[int] = (20,)
  activation: str = "sigmoid"
  seed: int = 0
  labels: Optional[Sequence[int]] = None
  style: Optional[str] = None
  image_size: int = 64
  feature_network: str = "auto"


def make_cell(optimizer: str, problem_name: str, **overrides: Any):
  """The optimizer network `optimizer` with the paper's settings for `problem_name`.

  Overrides that are None keep the paper's setting; a problem name that is not registered
  (e.g. "keras") gets DEFAULT_CELL_SETTINGS.
  """
  cell_class = CELLS.get(optimizer)
  kwargs = dict(PROBLEMS.attributes(problem_name).get("cell_settings", DEFAULT_CELL_SETTINGS))
  kwargs.update({k: v for k, v in overrides.items() if v is not None})
  try:
    return cell_class(**kwargs)
  except TypeError as e:  # an argument the cell does not take, or of the wrong kind
    raise ValueError(f"optimizer {optimizer!r}: {e}") from None


def make_problem(
  name: str,
  split: str = "train",
  batch_size: Optional[int] = None,
  *options: Any,
  **keyword_options: Any,
):
  """A problem family by name, on one data split.

  Quadratics have no data: splits differ only by the seeds the caller draws with. MNIST
  meta-trains on the train split minus a held-out validation part (10%) and is tested on the
  official test split, digits the optimizer never saw; mnist_convnet trains the CIFAR
  problems' convnet on the same digits. CIFAR problems (CIFAR_PROBLEMS) split CIFAR-10's
  train/test sets the same way; they need dataset_source "tfds" or "binary" and take `labels`
  (class ids to keep, default the problem's own). neural_art splits its content photos by
  photo (the package's, or data_dir/<split>/) and takes style (a shipped style's name or an
  image path), image_size and feature_network (l2l_tf.problems.neural_art).

  Args:
    name: a registered problem (PROBLEMS).
    split: one of SPLITS.
    batch_size: instances per problem (None: the family's default).
    *options, **keyword_options: the fields of ProblemOptions, in its order or by name.
  """
  factory = PROBLEMS.get(name)
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; choose one of {list(SPLITS)}")
  return factory(split, batch_size, ProblemOptions(*options, **keyword_options))
