"""A trained learned optimizer as a Keras 3 optimizer.

    model.compile(optimizer=LearnedOptimizer(...))

    opt = LearnedOptimizer.from_saved_model("savedmodels/mnist")   # or an optimizer directory
    opt = LearnedOptimizer(cell_or_rule, learning_rate=1.0, parameter_groups=None)
    model.compile(optimizer=opt, loss=...)

Compute is Keras-native: the cells are rebuilt from the exported configuration and weights
(l2l_tf.optimizer_format.load_rule), not run through the SavedModel's serving graph, so the
optimizer works in model.fit with and without jit_compile, under tf.distribute strategies and
mixed precision.
Every cell is accepted: CoordinatewiseLSTM, GlobalAveragingLSTM (LSTM+GAC), NTMBFGS, NTMLBFGS.

Semantics. A cell steps the coordinates of one problem instance together, as in
meta-training (l2l_tf.LearnedUpdateRule): in Keras, one instance is ALL the trainable
variables that one parameter group covers, flattened and concatenated in the order of the
variables given to build (model.trainable_variables) into one vector of n coordinates:

    update, new_states = cell(concat(gradients)[1, n, 1], states)
    variable += learning_rate * update[the variable's coordinates]

so GAC averages over every coordinate of the group and an NTM keeps one memory for the whole
group. Cells that declare `coordinatewise = True` (CoordinatewiseLSTM) compute the same thing
on any split of the coordinates, and are run on each variable separately (no concatenation).
States live in optimizer variables ("slots"): per-coordinate states (state_size an int) in one
slot per model variable, of shape variable.shape + (size,), named after cell.state_names;
states shared by the instance (NTMBFGS's dense memory, state_size None) in one slot per group,
of the shape the cell's get_initial_state gives ([n, n]). NTMBFGS refuses, when the optimizer
is built and before any memory is allocated, a group of more than its max_dense_coordinates
coordinates (use NTMLBFGS, whose memory is O(n k)).

Non-finite steps are skipped. If any gradient or proposed update (learning_rate * update)
of a step is NaN or infinite, that step changes no model variable and no slot (the
cell's state is kept as it was), and `optimizer.skipped_steps` (an int64 optimizer variable,
saved with the optimizer) counts it; `optimizer.iterations` still counts the step. Without
this guard one NaN batch would make every later update and state NaN. (Keras's
LossScaleOptimizer, used under mixed precision, skips non-finite scaled gradients before they
reach this optimizer; those steps are not counted here.)

Parameter groups: `parameter_groups` maps a regex on the Keras variable path
(variable.path, e.g. "sequential/dense/kernel"; re.search) to a group of the rule. Without
it, a single-group rule steps every variable; a several-group rule matches variable paths
with the rule's own ParameterGroups patterns. Every variable must map to exactly one group;
each group is its own instance, with its own cell and (for sharing cells) its own averages
and memory. A sharing group whose variables get gradients only in part (some are None) is
refused: its instance would lose coordinates.

Other Keras options behave as for any Keras optimizer but mean something slightly different
here (clipnorm/global_clipnorm barely change the step's size; learning_rate scales the
learned update); see docs/keras_optimizer.md.

Serialization: get_config carries the full rule (cell configs, parameter groups, metadata and
every weight as a list of floats), so keras.saving (.keras files) needs nothing but the
config; the slots and skipped_steps are saved as optimizer variables (state saved before
skipped_steps existed loads with it at 0). Loading optimizer variables that were saved for
different model variables (other count, shapes or groups) is refused.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import warnings
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from l2l_tf import export
from l2l_tf import learned_rule
from l2l_tf import optimizer_format
from l2l_tf.cells import base as cells_base

_LAYOUT_KEY = "l2l_tf_layout"

# What a Keras optimizer takes as learning_rate.
LearningRate = float | keras.optimizers.schedules.LearningRateSchedule | Callable[[], float]


def steps_each_variable_alone(cell: cells_base.LearnedOptimizerCell) -> bool:
  """Whether the cell may step each model variable on its own: its declared `coordinatewise`
  (LearnedOptimizerCell declares False: stepping the whole group at once is always exact)."""
  return bool(cell.coordinatewise)


class _Instance:
  """The coordinates that one cell call steps together: some model variables of one group.

  Attributes:
    group: the rule group (which cell).
    indices: positions of the variables in the optimizer's variable list, in concatenation
      order.
    sizes: the number of coordinates of each of those variables.
    shared_slots: {state position: optimizer variable} for the states that belong to the
      instance as a whole (state_size None), not to its coordinates.
  """

  def __init__(self, group, indices, sizes):
    self.group = group
    self.indices = list(indices)
    self.sizes = list(sizes)
    self.shared_slots = {}

  @property
  def num_coordinates(self):
    return sum(self.sizes)


def _concat(tensors):
  return tensors[0] if len(tensors) == 1 else tf.concat(tensors, axis=0)


def _split(tensor, sizes):
  return [tensor] if len(sizes) == 1 else tf.split(tensor, sizes, axis=0)


def _all_finite(tensors):
  return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(t)) for t in tensors]))


def serialize_rule(
  rule: learned_rule.LearnedUpdateRule, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
  """A JSON-compatible dict holding the rule's configuration and weights (lists of floats)."""
  weights = {
    key: {"dtype": str(value.dtype), "shape": list(value.shape), "values": value.ravel().tolist()}
    for key, value in optimizer_format.weight_arrays(rule).items()
  }
  return dict(optimizer_format.rule_config(rule, metadata), weights=weights)


def deserialize_rule(
  config: Mapping[str, Any],
) -> tuple[learned_rule.LearnedUpdateRule, dict[str, Any]]:
  """Inverse of serialize_rule: (LearnedUpdateRule, metadata).

  The config is checked and built as an optimizer file's optimizer.json is
  (optimizer_format.build_rule), and its weights are checked as weights.npz's are; anything
  wrong raises optimizer_format.OptimizerFileError (a ValueError).
  """
  source = "serialized LearnedOptimizer config"
  rule = optimizer_format.build_rule(config, source)
  weights = config.get("weights", {})
  if not isinstance(weights, dict):
    raise optimizer_format.OptimizerFileError(f"{source}: 'weights' must be a JSON object")
  try:
    stored = {
      key: np.asarray(entry["values"], dtype=entry.get("dtype", "float32")).reshape(entry["shape"])
      for key, entry in weights.items()
    }
  except (KeyError, TypeError, ValueError) as e:
    raise optimizer_format.OptimizerFileError(f"{source}: unreadable weights ({e})") from e
  optimizer_format.assign_weights(rule, stored, source)
  return rule, config.get("metadata", {})


def _as_rule(rule_or_cell):
  """(rule, metadata) from what LearnedOptimizer accepts: export.as_rule's inputs or a config."""
  if isinstance(rule_or_cell, dict) and "format" in rule_or_cell:
    return deserialize_rule(rule_or_cell)
  if isinstance(
    rule_or_cell, (learned_rule.LearnedUpdateRule, cells_base.LearnedOptimizerCell, dict)
  ):
    return export.as_rule(rule_or_cell), {}
  raise TypeError(
    "LearnedOptimizer needs a LearnedUpdateRule, a LearnedOptimizerCell, "
    "{group: cell} or a serialized rule; for a path use "
    f"LearnedOptimizer.from_saved_model(path). Got {type(rule_or_cell).__name__}"
  )


def _variable_path(variable):
  return getattr(variable, "path", None) or variable.name


def _slot_dtype(variable):
  return variable.dtype if "float" in str(variable.dtype) else "float32"


@keras.saving.register_keras_serializable(package="l2l_tf")
class LearnedOptimizer(keras.optimizers.Optimizer):
  """A Keras optimizer whose update is computed by trained learned-optimizer cells.

  Args:
    rule_or_cell: a LearnedUpdateRule, a LearnedOptimizerCell, {group: cell}, or a rule
      serialized by serialize_rule (what get_config stores).
    learning_rate: multiplies the cell's update (1.0 = the update the optimizer was trained
      to make). A float, a schedule or a callable, as for any Keras optimizer.
    parameter_groups: {variable-path regex: rule group}; see the module docstring.
    name, **kwargs: passed to keras.optimizers.Optimizer (clipnorm, weight_decay, ...).
  """

  def __init__(
    self,
    rule_or_cell: learned_rule.RuleOrCell | dict[str, Any],
    learning_rate: LearningRate = 1.0,
    parameter_groups: Mapping[str, str] | None = None,
    name: str = "learned_optimizer",
    **kwargs: Any,
  ) -> None:
    if isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, bool):
      learning_rate = float(learning_rate)
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    rule, metadata = _as_rule(rule_or_cell)
    if parameter_groups is not None:
      parameter_groups = {str(k): str(v) for k, v in dict(parameter_groups).items()}
      unknown = sorted(set(parameter_groups.values()) - set(rule.cells))
      if unknown:
        raise ValueError(
          f"parameter_groups names groups {unknown} that the rule does not have "
          f"(it has {sorted(rule.cells)})"
        )
      for pattern in parameter_groups:
        re.compile(pattern)
    self._rule = rule
    self._cells = dict(rule.cells)
    self.metadata = metadata
    self.parameter_groups = parameter_groups

  # -- construction from files ------------------------------------------------------------------

  @classmethod
  def from_saved_model(cls, path: str | os.PathLike[str], **kwargs: Any) -> LearnedOptimizer:
    """Builds the optimizer from an exported SavedModel or an l2l_tf optimizer directory.

    Reads the configuration and weights (the SavedModel's assets/optimizer.json and
    weights.npz) and rebuilds the cells; raises l2l_tf.optimizer_format.OptimizerFileError
    naming the path and the problem for anything that is not a readable l2l_tf optimizer.
    """
    path = str(path)
    if not os.path.exists(path):
      raise optimizer_format.OptimizerFileError(
        f"{path}: does not exist (expected an exported SavedModel or an l2l_tf optimizer directory)"
      )
    if optimizer_format.is_saved_model(path):
      export.inspect_saved_model(path)  # a corrupt or foreign SavedModel is refused here
    try:
      rule, metadata = optimizer_format.load_rule(path)
    except optimizer_format.OptimizerFileError:
      raise
    except Exception as e:  # pylint: disable=broad-except  # corrupt files of any kind
      raise optimizer_format.OptimizerFileError(
        f"{path}: not a readable l2l_tf optimizer ({type(e).__name__}: {e})"
      ) from e
    optimizer = cls(rule, **kwargs)
    optimizer.metadata = metadata
    return optimizer

  # -- groups and slots ---------------------------------------------------------------------------

  @property
  def rule(self) -> learned_rule.LearnedUpdateRule:
    return self._rule

  def group_of(self, variable: keras.Variable) -> str:
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

  @property
  def skipped_steps(self) -> keras.Variable:
    """Steps skipped because a gradient or proposed update was not finite (int64 variable)."""
    return self._skipped_steps

  def build(self, variables: Sequence[keras.Variable]) -> None:
    if self.built:
      return
    variables = list(variables)
    groups = [self.group_of(variable) for variable in variables]
    instances = self._plan_instances(variables, groups)
    # Shared states first: a cell may refuse its instance's size here (NTMBFGS over
    # max_dense_coordinates), before any optimizer variable is allocated.
    shared_initial = [self._shared_initial_states(instance) for instance in instances]
    super().build(variables)
    self._skipped_steps = self.add_variable(
      shape=(),
      initializer="zeros",
      dtype="int64",
      aggregation="only_first_replica",
      name="skipped_steps",
    )
    slots = [None] * len(variables)
    for instance, initial in zip(instances, shared_initial):
      slots_by_variable = self._add_state_slots(instance, variables, initial)
      for index, variable_slots in zip(instance.indices, slots_by_variable):
        slots[index] = variable_slots
    self._variable_groups = groups
    self._instances = instances
    self._state_slots = slots

  def _plan_instances(self, variables, groups):
    """One instance per variable for coordinatewise cells, else one per group."""
    instances, by_group = [], {}
    for index, (variable, group) in enumerate(zip(variables, groups)):
      size = int(np.prod(variable.shape))
      if steps_each_variable_alone(self._cells[group]):
        instances.append(_Instance(group, [index], [size]))
      else:
        by_group.setdefault(group, _Instance(group, [], [])).indices.append(index)
        by_group[group].sizes.append(size)
    return instances + list(by_group.values())

  def _shared_initial_states(self, instance):
    """{state position: initial value} of the instance's shared states (none for most cells);
    the slots take their shapes (the values are zeros, as every cell's initial state)."""
    cell = self._cells[instance.group]
    if all(size is not None for size in cell.state_size):
      return {}
    try:
      with tf.init_scope():  # eager even if build runs while a train step is traced
        states = cell.get_initial_state(instance.num_coordinates)
    except (ValueError, tf.errors.InvalidArgumentError) as e:
      raise ValueError(
        f"LearnedOptimizer group {instance.group!r}: its {len(instance.indices)} variables "
        f"are one instance of {instance.num_coordinates} coordinates for "
        f"{type(cell).__name__}, which refuses it: {e}"
      ) from e
    return {
      position: state
      for position, (state, size) in enumerate(zip(states, cell.state_size))
      if size is None
    }

  def _add_state_slots(self, instance, variables, shared_initial):
    """Creates the instance's slots; returns, per variable, its list of slots in state order
    (a shared state's slot appears in every variable's list)."""
    cell = self._cells[instance.group]
    first = variables[instance.indices[0]]
    for position, value in shared_initial.items():
      instance.shared_slots[position] = self.add_variable(
        shape=tuple(value.shape),
        initializer="zeros",  # cells start from zero states
        dtype=_slot_dtype(first),
        name=f"{instance.group}_{cell.state_names[position]}",
      )
    slots = []
    for index in instance.indices:
      variable = variables[index]
      base_name = _variable_path(variable).replace("/", "_")
      slots.append(
        [
          instance.shared_slots[position]
          if size is None
          else self.add_variable(
            shape=tuple(variable.shape) + (int(size),),
            initializer="zeros",
            dtype=_slot_dtype(variable),
            name=f"{base_name}_{state}",
          )
          for position, (state, size) in enumerate(zip(cell.state_names, cell.state_size))
        ]
      )
    return slots

  def state_slots(self, variable: keras.Variable) -> list[keras.Variable]:
    """The slot variables holding `variable`'s cell states, in the cell's state order."""
    return list(self._state_slots[self._get_variable_index(variable)])

  # -- the step ----------------------------------------------------------------------------

  def update_step(
    self, gradient: tf.Tensor, variable: keras.Variable, learning_rate: tf.Tensor
  ) -> None:
    raise NotImplementedError(
      "LearnedOptimizer steps whole instances; it overrides "
      "_distributed_tf_update_step, not update_step"
    )

  def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
    """Steps every instance at once (Keras's TF backend would call update_step per variable).

    Runs in cross-replica context on all-reduced gradients. extended.update on one optimizer
    variable runs `_step` once per replica in that replica's update context, where reading
    or assigning any mirrored variable touches that replica's copy.
    """
    grads = [None] * len(self._trainable_variables)
    for grad, variable in grads_and_vars:
      grads[self._get_variable_index(variable)] = grad
    distribution.extended.update(
      self._skipped_steps.value, self._step, args=(grads, learning_rate), group=False
    )

  def _step(self, unused_anchor, grads, learning_rate):
    """Proposes every instance's update and states; writes them only if all are finite."""
    writes, checked = [], []
    for instance in self._instances:
      present = [grads[index] is not None for index in instance.indices]
      if not any(present):
        continue
      if not all(present):
        missing = [
          _variable_path(self._trainable_variables[i])
          for i, has in zip(instance.indices, present)
          if not has
        ]
        raise ValueError(
          f"LearnedOptimizer group {instance.group!r}: no gradient for "
          f"{missing}; its cell steps the whole group as one instance. Freeze "
          "these variables (trainable=False) or give them their own group."
        )
      instance_writes, instance_checked = self._propose(instance, grads, learning_rate)
      writes += instance_writes
      checked += instance_checked
    if not writes:
      return

    def write():
      for target, proposed in writes:
        self.assign(target, proposed)
      return tf.constant(0, tf.int64)

    # A cond, not a select per tensor: a skipped step writes nothing, a taken one pays no
    # extra pass over the states.
    skipped = tf.cond(_all_finite(checked), write, lambda: tf.constant(1, tf.int64))
    self.assign_add(self._skipped_steps, skipped)

  def _propose(self, instance, grads, learning_rate):
    """Runs the cell on one instance; returns ([(variable or slot, proposed value)], [tensors
    that must be finite: the gradients and the proposed steps]).

    New states are not checked: a NaN state makes the update NaN in the same step (the update
    is computed from the states), so checking the update covers them without another pass.
    """
    cell = self._cells[instance.group]
    dtype = cell.compute_dtype
    variables = [self._trainable_variables[index] for index in instance.indices]
    gradient = _concat(
      [
        tf.reshape(tf.cast(tf.convert_to_tensor(grads[index]), dtype), [-1])
        for index in instance.indices
      ]
    )
    states = []
    for position, size in enumerate(cell.state_size):
      if size is None:
        states.append(tf.cast(instance.shared_slots[position], dtype)[None])
      else:
        states.append(
          _concat(
            [
              tf.reshape(tf.cast(self._state_slots[index][position], dtype), [-1, size])
              for index in instance.indices
            ]
          )[None]
        )
    updates, new_states = cell(gradient[None, :, None], states)
    writes, checked = [], [gradient]
    for variable, update in zip(variables, _split(tf.reshape(updates, [-1]), instance.sizes)):
      step = tf.cast(learning_rate, variable.dtype) * tf.reshape(
        tf.cast(update, variable.dtype), variable.shape
      )
      writes.append((variable, variable + step))
      checked.append(step)
    for position, (state, size) in enumerate(zip(new_states, cell.state_size)):
      if size is None:
        slot = instance.shared_slots[position]
        writes.append((slot, tf.reshape(tf.cast(state, slot.dtype), slot.shape)))
        continue
      parts = _split(tf.reshape(state, [-1, size]), instance.sizes)
      for index, part in zip(instance.indices, parts):
        slot = self._state_slots[index][position]
        writes.append((slot, tf.reshape(tf.cast(part, slot.dtype), slot.shape)))
    return writes, checked

  # -- saving ------------------------------------------------------------------------------

  def _layout(self):
    """What the slots were built for: per model variable, its shape and group (and path)."""
    if not self.built:
      return None
    return [
      {"path": _variable_path(v), "shape": [int(d) for d in v.shape], "group": g}
      for v, g in zip(self._trainable_variables, self._variable_groups)
    ]

  def save_own_variables(self, store: MutableMapping[str, Any]) -> None:
    super().save_own_variables(store)
    layout = self._layout()
    if layout is not None:
      store[_LAYOUT_KEY] = np.frombuffer(json.dumps(layout).encode("utf-8"), dtype=np.uint8)

  def load_own_variables(self, store: Mapping[str, Any]) -> None:
    keys = [k for k in store.keys() if k != _LAYOUT_KEY]
    if not self.built:
      warnings.warn(
        f"Skipping variable loading for optimizer '{self.name}': it has not been "
        "built (call optimizer.build(model.trainable_variables) first)",
        stacklevel=2,
      )
      return
    if _LAYOUT_KEY in store.keys():
      saved = json.loads(bytes(np.asarray(store[_LAYOUT_KEY], dtype=np.uint8)).decode("utf-8"))
      self.check_layout(saved)
    values = [np.asarray(store[str(i)]) for i in range(len(keys))]
    skipped_index = [id(v) for v in self.variables].index(id(self._skipped_steps))
    if len(values) == len(self.variables) - 1:
      # Saved before skipped_steps existed (the same variables otherwise, in the same order).
      values.insert(skipped_index, np.zeros((), np.int64))
    if len(values) != len(self.variables):
      raise ValueError(
        f"Optimizer '{self.name}' has {len(self.variables)} variables but the "
        f"saved optimizer state has {len(keys)}: it was saved for different "
        "model variables"
      )
    for variable, value in zip(self.variables, values):
      if tuple(variable.shape) != value.shape:
        raise ValueError(
          f"Optimizer '{self.name}': saved state {value.shape} does not fit "
          f"{variable.path} {tuple(variable.shape)}: it was saved for different "
          "model variables"
        )
    for variable, value in zip(self.variables, values):
      variable.assign(value)

  def check_layout(self, saved: Sequence[Mapping[str, Any]]) -> None:
    """Refuses optimizer state saved for other model variables (count, shapes or groups)."""
    current = self._layout()
    describe = lambda e: f"{e['path']} {tuple(e['shape'])} (group {e['group']!r})"
    if len(saved) != len(current):
      raise ValueError(
        f"Optimizer state was saved for {len(saved)} model variables; this "
        f"optimizer steps {len(current)}: refusing to load state for different "
        "variables"
      )
    for old, new in zip(saved, current):
      if old["shape"] != new["shape"] or old["group"] != new["group"]:
        raise ValueError(
          f"Optimizer state for {describe(old)} cannot be loaded for "
          f"{describe(new)}: refusing to load state for different variables"
        )

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update(
      rule_or_cell=serialize_rule(self._rule, self.metadata), parameter_groups=self.parameter_groups
    )
    return config
