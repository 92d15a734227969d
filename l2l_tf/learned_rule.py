"""The learned update rule: optimizer cells stepping groups of an optimizee's parameters."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from l2l_tf import registry
from l2l_tf import update_rules
from l2l_tf.cells.base import LearnedOptimizerCell


class ParameterGroups:
  """Assigns parameters to optimizer networks by regular expressions on their names.

  Args:
    patterns: {group_name: regex}; a parameter belongs to the group whose regex it matches
      (re.search). Every parameter must match exactly one group.
  """

  def __init__(self, patterns: Mapping[str, str]) -> None:
    if not patterns:
      raise ValueError("ParameterGroups needs at least one {group: pattern} entry")
    self.patterns = dict(patterns)
    self._compiled = {g: re.compile(p) for g, p in self.patterns.items()}

  def assign(self, param_names: Sequence[str]) -> dict[str, list[str]]:
    """Returns {group: [names in order]}; refuses unmatched or doubly matched parameters."""
    groups = {g: [] for g in self.patterns}
    for name in param_names:
      hits = [g for g, regex in self._compiled.items() if regex.search(name)]
      if len(hits) != 1:
        problem = "no group" if not hits else f"{len(hits)} groups {hits}"
        raise ValueError(f"Parameter {name!r} is matched by {problem}; patterns: {self.patterns}")
      groups[hits[0]].append(name)
    return groups


class LearnedUpdateRule(update_rules.UpdateRule):
  """Steps parameters with learned optimizer cells, one cell per parameter group.

  Each group's parameters are flattened and concatenated into [batch, n_group, 1] so that the
  cell sees all coordinates of one instance together (what GAC and NTM memories need).
  State is {group: [state tensors]}, the cell's own state list kept intact.

  Args:
    cells: a LearnedOptimizerCell, or {group: cell}.
    groups: ParameterGroups (or its {group: regex} dict); defaults to one group "all".
  """

  name = "learned"

  def __init__(
    self,
    cells: LearnedOptimizerCell | Mapping[str, LearnedOptimizerCell],
    groups: ParameterGroups | Mapping[str, str] | None = None,
  ) -> None:
    if not isinstance(cells, Mapping):
      cells = {"all": cells}
    self.cells = dict(cells)
    if groups is None:
      if len(self.cells) != 1:
        raise ValueError("Several cells need ParameterGroups saying which parameters each steps")
      groups = {next(iter(self.cells)): ".*"}
    self.groups = groups if isinstance(groups, ParameterGroups) else ParameterGroups(groups)
    mismatched = set(self.groups.patterns) ^ set(self.cells)
    if mismatched:
      raise ValueError(
        f"Groups and cells must have the same names; mismatched: {sorted(mismatched)}"
      )

  @property
  def trainable_variables(self) -> list[tf.Variable]:
    return [v for cell in self.cells.values() for v in cell.trainable_variables]

  def _assignment(self, params):
    return self.groups.assign(list(params))

  def init_state(self, params: update_rules.Params) -> dict[str, list[tf.Tensor]]:
    state = {}
    for group, names in self._assignment(params).items():
      if not names:
        continue
      batch = tf.shape(params[names[0]])[0]
      n = sum(int(params[name].shape[1:].num_elements()) for name in names)
      state[group] = self.cells[group].get_initial_state([batch, n])
    return state

  def step(
    self,
    params: update_rules.Params,
    grads: update_rules.Params,
    state: Mapping[str, Sequence[tf.Tensor]],
  ) -> tuple[update_rules.Params, dict[str, list[tf.Tensor]]]:
    new_params, new_state = {}, {}
    for group, names in self._assignment(params).items():
      if not names:
        continue
      batch = tf.shape(params[names[0]])[0]
      flat = tf.concat([tf.reshape(grads[name], [batch, -1]) for name in names], axis=1)
      updates, new_state[group] = self.cells[group](flat[..., None], state[group])
      sizes = [int(params[name].shape[1:].num_elements()) for name in names]
      for name, update in zip(names, tf.split(updates[..., 0], sizes, axis=1)):
        new_params[name] = params[name] + tf.reshape(update, tf.shape(params[name]))
    return new_params, new_state


# What LearnedUpdateRule, export and the Keras optimizer accept as a rule.
RuleOrCell = LearnedUpdateRule | LearnedOptimizerCell | dict[str, LearnedOptimizerCell]


def make_rule(optimizer: str, problem_name: str, **cell_kwargs: Any) -> LearnedUpdateRule:
  """A fresh LearnedUpdateRule of `optimizer` cells with the paper's settings for a problem.

  One cell (registry.make_cell(optimizer, problem_name, **cell_kwargs)) per parameter group
  the problem declares in the registry (the CIFAR convnets: one network for the conv layers,
  one for the fully connected ones, which never share weights); one cell for every
  parameter otherwise.
  """
  groups = registry.PROBLEMS.attributes(problem_name).get("parameter_groups")
  if groups is None:
    return LearnedUpdateRule(registry.make_cell(optimizer, problem_name, **cell_kwargs))
  return LearnedUpdateRule(
    {group: registry.make_cell(optimizer, problem_name, **cell_kwargs) for group in groups}, groups
  )
