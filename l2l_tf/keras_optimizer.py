"""A trained learned optimizer as a Keras 3 optimizer: model.compile(optimizer=LearnedOptimizer(...)).

    opt = LearnedOptimizer.from_saved_model("savedmodels/mnist")   # or an optimizer directory
    opt = LearnedOptimizer(cell_or_rule, learning_rate=1.0, parameter_groups=None)
    model.compile(optimizer=opt, loss=...)

Compute is Keras-native: the cells are rebuilt from the exported configuration and weights
(l2l_tf.io.load_rule), not run through the SavedModel's serving graph, so the optimizer works
in model.fit with and without jit_compile, under tf.distribute strategies and mixed precision.

Semantics. For every trainable variable the optimizer keeps the cell's states in slots
(add_variable, shape var.shape + (size,), one per state, named after cell.state_names) and on
each step runs the cell on that variable's gradient flattened to [1, n, 1]:

    update, new_states = cell(gradient[1, n, 1], states)
    variable += learning_rate * update

Meta-training (l2l_tf.LearnedUpdateRule) concatenates all coordinates of a parameter group
into one vector; for coordinatewise cells (CoordinatewiseLSTM) stepping each variable on its
own is exactly the same computation. Cells that share information across coordinates
(GlobalAveragingLSTM, the NTM cells) would compute something different per variable, so they
are refused here; use them through LearnedUpdateRule or the exported SavedModel's `step`.
A cell class can declare `coordinatewise = True` to be accepted.

Parameter groups: `parameter_groups` maps a regex on the Keras variable path
(variable.path, e.g. "sequential/dense/kernel"; re.search) to a group of the rule. Without
it, a single-group rule steps every variable; a several-group rule matches variable paths
with the rule's own ParameterGroups patterns. Every variable must map to exactly one group.

Serialization: get_config carries the full rule (cell configs, parameter groups, metadata and
every weight as a list of floats), so keras.saving (.keras files) needs nothing but the
config; the slot states are saved as optimizer variables. Loading optimizer variables that
were saved for different model variables (other count, shapes or groups) is refused.
"""
import json
import numbers
import os
import re
import warnings

import keras
import numpy as np
import tensorflow as tf

from l2l_tf import export
from l2l_tf import io as io_lib
from l2l_tf import learned_rule
from l2l_tf.cells import base as cells_base
from l2l_tf.cells import coordinatewise_lstm

_LAYOUT_KEY = "l2l_tf_layout"


def is_coordinatewise(cell):
  """Whether stepping any subset of the coordinates separately gives the same result."""
  declared = getattr(type(cell), "coordinatewise", None)
  if declared is not None:
    return bool(declared)
  base = coordinatewise_lstm.CoordinatewiseLSTM
  cls = type(cell)
  return (isinstance(cell, base) and cls.call is base.call
          and cls.transform_hidden is base.transform_hidden
          and cls.get_initial_state is base.get_initial_state)


def serialize_rule(rule, metadata=None):
  """A JSON-compatible dict holding the rule's configuration and weights (lists of floats)."""
  weights = {key: {"dtype": str(value.dtype), "shape": list(value.shape),
                   "values": value.ravel().tolist()}
             for key, value in io_lib.weight_arrays(rule).items()}
  return dict(io_lib.rule_config(rule, metadata), weights=weights)


def deserialize_rule(config):
  """Inverse of serialize_rule: (LearnedUpdateRule, metadata)."""
  if not isinstance(config, dict) or config.get("format") != io_lib.FORMAT:
    raise ValueError("Not a serialized l2l_tf optimizer (expected format "
                     f"{io_lib.FORMAT!r}): {str(config)[:200]}")
  if config.get("version") != io_lib.VERSION:
    raise ValueError(f"Serialized l2l_tf optimizer version {config.get('version')} is not "
                     f"supported (expected {io_lib.VERSION})")
  cells = {g: keras.saving.deserialize_keras_object(c) for g, c in config["cells"].items()}
  rule = learned_rule.LearnedUpdateRule(cells, config["groups"])
  stored = {key: np.asarray(entry["values"], dtype=entry.get("dtype", "float32")).reshape(
      entry["shape"]) for key, entry in config.get("weights", {}).items()}
  io_lib.assign_weights(rule, stored, "serialized LearnedOptimizer config")
  return rule, config.get("metadata", {})


def _as_rule(rule_or_cell):
  if isinstance(rule_or_cell, learned_rule.LearnedUpdateRule):
    return rule_or_cell, {}
  if isinstance(rule_or_cell, cells_base.LearnedOptimizerCell):
    return learned_rule.LearnedUpdateRule(rule_or_cell), {}
  if isinstance(rule_or_cell, dict) and "format" in rule_or_cell:
    return deserialize_rule(rule_or_cell)
  if isinstance(rule_or_cell, dict):
    return learned_rule.LearnedUpdateRule(rule_or_cell), {}
  raise TypeError("LearnedOptimizer needs a LearnedUpdateRule, a LearnedOptimizerCell, "
                  "{group: cell} or a serialized rule; for a path use "
                  f"LearnedOptimizer.from_saved_model(path). Got {type(rule_or_cell).__name__}")


def _variable_path(variable):
  return getattr(variable, "path", None) or variable.name


@keras.saving.register_keras_serializable(package="l2l_tf")
class LearnedOptimizer(keras.optimizers.Optimizer):
  """A Keras optimizer whose update is computed by trained learned-optimizer cells.

  Args:
    rule_or_cell: a LearnedUpdateRule, a coordinatewise LearnedOptimizerCell, {group: cell},
      or a rule serialized by serialize_rule (what get_config stores).
    learning_rate: multiplies the cell's update (1.0 = the update the optimizer was trained
      to make). A float, a schedule or a callable, as for any Keras optimizer.
    parameter_groups: {variable-path regex: rule group}; see the module docstring.
    name, **kwargs: passed to keras.optimizers.Optimizer (clipnorm, weight_decay, ...).
  """

  def __init__(self, rule_or_cell, learning_rate=1.0, parameter_groups=None,
               name="learned_optimizer", **kwargs):
    if isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, bool):
      learning_rate = float(learning_rate)
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    rule, metadata = _as_rule(rule_or_cell)
    for group, cell in rule.cells.items():
      if not is_coordinatewise(cell):
        raise ValueError(
            f"{type(cell).__name__} (group {group!r}) shares information across coordinates, "
            "so stepping each Keras variable separately would change what it computes. "
            "LearnedOptimizer supports coordinatewise cells only (e.g. CoordinatewiseLSTM); "
            "step this cell with l2l_tf.LearnedUpdateRule or the exported SavedModel's step "
            "signature on the whole group instead.")
      if any(size is None for size in cell.state_size):
        raise ValueError(f"{type(cell).__name__}: states with a size of None cannot be slots")
    if parameter_groups is not None:
      parameter_groups = {str(k): str(v) for k, v in dict(parameter_groups).items()}
      unknown = sorted(set(parameter_groups.values()) - set(rule.cells))
      if unknown:
        raise ValueError(f"parameter_groups names groups {unknown} that the rule does not have "
                         f"(it has {sorted(rule.cells)})")
      for pattern in parameter_groups:
        re.compile(pattern)
    self._rule = rule
    self._cells = dict(rule.cells)
    self.metadata = metadata
    self.parameter_groups = parameter_groups

  # -- construction from files ------------------------------------------------------------------

  @classmethod
  def from_saved_model(cls, path, **kwargs):
    """Builds the optimizer from an exported SavedModel or an l2l_tf optimizer directory.

    Reads the configuration and weights (the SavedModel's assets/optimizer.json and
    weights.npz) and rebuilds the cells; raises l2l_tf.io.OptimizerFileError naming the path
    and the problem for anything that is not a readable l2l_tf optimizer.
    """
    path = str(path)
    if not os.path.exists(path):
      raise io_lib.OptimizerFileError(f"{path}: does not exist (expected an exported SavedModel "
                                      "or an l2l_tf optimizer directory)")
    if io_lib.is_saved_model(path):
      export.inspect_saved_model(path)  # a corrupt or foreign SavedModel is refused here
    try:
      rule, metadata = io_lib.load_rule(path)
    except io_lib.OptimizerFileError:
      raise
    except Exception as e:  # pylint: disable=broad-except  # corrupt files of any kind
      raise io_lib.OptimizerFileError(
          f"{path}: not a readable l2l_tf optimizer ({type(e).__name__}: {e})") from e
    optimizer = cls(rule, **kwargs)
    optimizer.metadata = metadata
    return optimizer

  # -- groups and slots ---------------------------------------------------------------------------

  @property
  def rule(self):
    return self._rule

  def group_of(self, variable):
    """The rule group that steps `variable` (by its path)."""
    path = _variable_path(variable)
    if self.parameter_groups is None and len(self._cells) == 1:
      return next(iter(self._cells))
    if self.parameter_groups is None:
      hits = sorted({g for g, p in self._rule.groups.patterns.items() if re.search(p, path)})
      source = f"the rule's groups {self._rule.groups.patterns}"
    else:
      hits = sorted({g for p, g in self.parameter_groups.items() if re.search(p, path)})
      source = f"parameter_groups {self.parameter_groups}"
    if len(hits) != 1:
      problem = "no group" if not hits else f"several groups {hits}"
      raise ValueError(f"Variable {path!r} is matched by {problem} of {source}")
    return hits[0]

  def build(self, variables):
    if self.built:
      return
    super().build(variables)
    groups, slots = [], []
    for variable in variables:
      group = self.group_of(variable)
      cell = self._cells[group]
      dtype = variable.dtype if "float" in str(variable.dtype) else "float32"
      base_name = _variable_path(variable).replace("/", "_")
      slots.append([
          self.add_variable(shape=tuple(variable.shape) + (int(size),), initializer="zeros",
                            dtype=dtype, name=f"{base_name}_{state}")
          for state, size in zip(cell.state_names, cell.state_size)])
      groups.append(group)
    self._variable_groups = groups
    self._state_slots = slots

  def state_slots(self, variable):
    """The slot variables holding `variable`'s cell states, in the cell's state order."""
    return list(self._state_slots[self._get_variable_index(variable)])

  def update_step(self, gradient, variable, learning_rate):
    index = self._get_variable_index(variable)
    cell = self._cells[self._variable_groups[index]]
    slots = self._state_slots[index]
    dtype = cell.compute_dtype
    gradient = tf.convert_to_tensor(gradient)
    g = tf.reshape(tf.cast(gradient, dtype), [1, -1, 1])
    states = [tf.reshape(tf.cast(slot, dtype), [1, -1, int(size)])
              for slot, size in zip(slots, cell.state_size)]
    updates, new_states = cell(g, states)
    for slot, state in zip(slots, new_states):
      self.assign(slot, tf.reshape(tf.cast(state, slot.dtype), slot.shape))
    update = tf.reshape(tf.cast(updates, variable.dtype), variable.shape)
    self.assign_add(variable, tf.cast(learning_rate, variable.dtype) * update)

  # -- saving ---------------------------------------------------------------------------------------

  def _layout(self):
    """What the slots were built for: per model variable, its shape and group (and path)."""
    if not self.built:
      return None
    return [{"path": _variable_path(v), "shape": [int(d) for d in v.shape], "group": g}
            for v, g in zip(self._trainable_variables, self._variable_groups)]

  def save_own_variables(self, store):
    super().save_own_variables(store)
    layout = self._layout()
    if layout is not None:
      store[_LAYOUT_KEY] = np.frombuffer(json.dumps(layout).encode("utf-8"), dtype=np.uint8)

  def load_own_variables(self, store):
    keys = [k for k in store.keys() if k != _LAYOUT_KEY]
    if not self.built:
      warnings.warn(f"Skipping variable loading for optimizer '{self.name}': it has not been "
                    "built (call optimizer.build(model.trainable_variables) first)", stacklevel=2)
      return
    if _LAYOUT_KEY in store.keys():
      saved = json.loads(bytes(np.asarray(store[_LAYOUT_KEY], dtype=np.uint8)).decode("utf-8"))
      self.check_layout(saved)
    if len(keys) != len(self.variables):
      raise ValueError(f"Optimizer '{self.name}' has {len(self.variables)} variables but the "
                       f"saved optimizer state has {len(keys)}: it was saved for different "
                       "model variables")
    values = [np.asarray(store[str(i)]) for i in range(len(self.variables))]
    for variable, value in zip(self.variables, values):
      if tuple(variable.shape) != value.shape:
        raise ValueError(f"Optimizer '{self.name}': saved state {value.shape} does not fit "
                         f"{variable.path} {tuple(variable.shape)}: it was saved for different "
                         "model variables")
    for variable, value in zip(self.variables, values):
      variable.assign(value)

  def check_layout(self, saved):
    """Refuses optimizer state saved for other model variables (count, shapes or groups)."""
    current = self._layout()
    describe = lambda e: f"{e['path']} {tuple(e['shape'])} (group {e['group']!r})"
    if len(saved) != len(current):
      raise ValueError(f"Optimizer state was saved for {len(saved)} model variables; this "
                       f"optimizer steps {len(current)}: refusing to load state for different "
                       "variables")
    for old, new in zip(saved, current):
      if old["shape"] != new["shape"] or old["group"] != new["group"]:
        raise ValueError(f"Optimizer state for {describe(old)} cannot be loaded for "
                         f"{describe(new)}: refusing to load state for different variables")

  def get_config(self):
    config = super().get_config()
    config.update(rule_or_cell=serialize_rule(self._rule, self.metadata),
                  parameter_groups=self.parameter_groups)
    return config
