"""Update rules: the one step protocol shared by hand-designed and learned optimizers.

    state = rule.init_state(params)
    new_params, new_state = rule.step(params, grads, state)

params and grads are dicts of tensors; state is a nested structure of tensors. Rules are pure
functions of their inputs (plus, for learned rules, the network weights), so one unroll drives
every optimizer and identical problems are seen by all of them.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from l2l_tf import registry

Params = dict[str, tf.Tensor]
# A Python number, or a tf.Variable that lets one traced graph serve several rates (tuning).
LearningRate = float | tf.Variable


class UpdateRule(abc.ABC):
  """Base class of update rules.

  A subclass overrides:
    init_state(params) -> state: the optimizer state for parameters {name: tensor}, a nested
      structure of tensors (() if it keeps none).
    step(params, grads, state) -> (new_params, new_state): one update, a pure function of its
      inputs (and of the rule's weights) that the unroll may trace into a graph.
  and may override trainable_variables (the weights meta-training trains). It sets `name`
  (results are keyed by it) and, if it has one, `learning_rate`. A hand-designed baseline
  registers with @registry.BASELINES.register() and takes learning_rate as a keyword.
  """

  name: str = None
  learning_rate: Any = None

  @abc.abstractmethod
  def init_state(self, params: Params) -> Any:
    """The state before the first step."""

  @abc.abstractmethod
  def step(self, params: Params, grads: Params, state: Any) -> tuple[Params, Any]:
    """(new parameters, new state) after one update with gradients `grads`."""

  @property
  def trainable_variables(self) -> list[tf.Variable]:
    return []


def _rate(value):
  """Python numbers stay floats; a tf.Variable (used when tuning) stays a variable."""
  return value if isinstance(value, tf.Variable) else float(value)


def _cast(value, like):
  """value in like's dtype; a Python number goes straight to it (tf.cast would round it to
  float32 first, which float64 runs, e.g. finite-difference tests, must not see)."""
  if isinstance(value, (int, float)):
    return tf.constant(value, like.dtype)
  return tf.cast(value, like.dtype)


def _zeros_like(params):
  return {name: tf.zeros_like(p) for name, p in params.items()}


def _step_each(params, grads, slots, update):
  """Steps every parameter alone: update(p, g, *its slot values) -> (new p, *new slot values).

  slots: a list of {name: tensor} (one per kind of slot). Returns (new params, new slots).
  """
  new_params, new_slots = {}, [{} for _ in slots]
  for n, p in params.items():
    new_params[n], *values = update(p, grads[n], *(slot[n] for slot in slots))
    for new_slot, value in zip(new_slots, values):
      new_slot[n] = value
  return new_params, new_slots


@registry.BASELINES.register()
class SGD(UpdateRule):
  """theta <- theta - lr * g (keras.optimizers.SGD)."""

  name = "sgd"

  def __init__(self, learning_rate: LearningRate = 0.01) -> None:
    self.learning_rate = _rate(learning_rate)

  def init_state(self, params: Params) -> tuple[()]:
    return ()

  def step(self, params: Params, grads: Params, state: tuple[()]) -> tuple[Params, tuple[()]]:
    return {n: p - _cast(self.learning_rate, p) * grads[n] for n, p in params.items()}, state


class _SlotRule(UpdateRule):
  """A rule whose state is `slots`: for each, one tensor per parameter, zeros at first.

  A subclass names its slots and overrides update_one(p, g, *slot values) -> (new p, *new slot
  values), which steps one parameter alone.
  """

  slots: tuple[str, ...] = ()

  @abc.abstractmethod
  def update_one(
    self, p: tf.Tensor, g: tf.Tensor, *slot_values: tf.Tensor
  ) -> tuple[tf.Tensor, ...]:
    """(new parameter, *new slot values) of one parameter p with gradient g."""

  def init_state(self, params: Params) -> dict[str, Params]:
    return {slot: _zeros_like(params) for slot in self.slots}

  def step(
    self, params: Params, grads: Params, state: Mapping[str, Params]
  ) -> tuple[Params, dict[str, Params]]:
    new_params, new_slots = _step_each(
      params, grads, [state[s] for s in self.slots], self.update_one
    )
    return new_params, dict(zip(self.slots, new_slots))


@registry.BASELINES.register()
class RMSprop(_SlotRule):
  """keras.optimizers.RMSprop (rho 0.9, epsilon 1e-7, no momentum, not centred)."""

  name = "rmsprop"
  slots = ("velocity",)

  def __init__(
    self, learning_rate: LearningRate = 0.001, rho: float = 0.9, epsilon: float = 1e-7
  ) -> None:
    self.learning_rate = _rate(learning_rate)
    self.rho = float(rho)
    self.epsilon = float(epsilon)

  def update_one(self, p: tf.Tensor, g: tf.Tensor, v: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    v = self.rho * v + (1 - self.rho) * tf.square(g)
    return p - _cast(self.learning_rate, p) * g / tf.sqrt(v + self.epsilon), v


@registry.BASELINES.register()
class Adam(UpdateRule):
  """keras.optimizers.Adam (beta_1 0.9, beta_2 0.999, epsilon 1e-7), bias-corrected."""

  name = "adam"

  def __init__(
    self,
    learning_rate: LearningRate = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
  ) -> None:
    self.learning_rate = _rate(learning_rate)
    self.beta_1 = float(beta_1)
    self.beta_2 = float(beta_2)
    self.epsilon = float(epsilon)

  def init_state(self, params: Params) -> dict[str, Any]:
    dtype = next(iter(params.values())).dtype
    return {"step": tf.zeros([], dtype), "m": _zeros_like(params), "v": _zeros_like(params)}

  def step(
    self, params: Params, grads: Params, state: Mapping[str, Any]
  ) -> tuple[Params, dict[str, Any]]:
    t = state["step"] + 1
    alpha = (
      _cast(self.learning_rate, t)
      * tf.sqrt(1 - tf.pow(_cast(self.beta_2, t), t))
      / (1 - tf.pow(_cast(self.beta_1, t), t))
    )

    def update(p, g, m, v):
      m = m + (g - m) * (1 - self.beta_1)
      v = v + (tf.square(g) - v) * (1 - self.beta_2)
      return p - m * alpha / (tf.sqrt(v) + self.epsilon), m, v

    new_params, (m, v) = _step_each(params, grads, [state["m"], state["v"]], update)
    return new_params, {"step": t, "m": m, "v": v}


@registry.BASELINES.register()
class NAG(_SlotRule):
  """Nesterov momentum exactly as keras.optimizers.SGD(momentum, nesterov=True) steps."""

  name = "nag"
  slots = ("momentum",)

  def __init__(self, learning_rate: LearningRate = 0.01, momentum: float = 0.9) -> None:
    self.learning_rate = _rate(learning_rate)
    self.momentum = float(momentum)

  def update_one(self, p: tf.Tensor, g: tf.Tensor, m: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    lr_g = _cast(self.learning_rate, p) * g
    m = m * self.momentum - lr_g
    return p + (m * self.momentum - lr_g), m


class ScaledUpdateRule(UpdateRule):
  """Another rule with its update multiplied by a constant: theta + scale * delta.

  What LearnedOptimizer's learning_rate does in Keras, for the evaluation unroll (a learning-
  rate sensitivity study of a learned optimizer).
  """

  def __init__(self, rule: UpdateRule, scale: LearningRate) -> None:
    self.rule = rule
    self.scale = _rate(scale)  # a tf.Variable lets one traced graph serve several scales
    self.name = (
      f"{rule.name}_scaled"
      if isinstance(self.scale, tf.Variable)
      else f"{rule.name}_x{self.scale:g}"
    )

  def init_state(self, params: Params) -> Any:
    return self.rule.init_state(params)

  def step(self, params: Params, grads: Params, state: Any) -> tuple[Params, Any]:
    new_params, new_state = self.rule.step(params, grads, state)
    return {n: p + _cast(self.scale, p) * (new_params[n] - p) for n, p in params.items()}, new_state

  @property
  def trainable_variables(self) -> list[tf.Variable]:
    return self.rule.trainable_variables


def make_baseline(name: str, learning_rate: LearningRate) -> UpdateRule:
  """The registered baseline `name` (registry.BASELINES) with this learning rate."""
  return registry.BASELINES.get(name)(learning_rate=learning_rate)
