"""The protocol every learned-optimizer cell follows: a Keras RNN cell over coordinates.

A cell reads raw gradients and returns updates, one coordinate per row:

    updates, new_states = cell(gradients, states)

gradients and updates have shape [..., n, 1]: n coordinates of one problem instance, with any
leading batch of independent instances. States are a flat list of tensors; per-coordinate
states have shape [..., n, units], and shared states (a memory) have shapes of their own.
Weights never depend on n, so one cell steps any number of coordinates.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import keras
import tensorflow as tf

from l2l_tf import preprocessing as preprocessing_lib
from l2l_tf import registry

# What get_initial_state builds states for: n coordinates, or a shape such as [B, n] whose
# entries may be scalar tensors (a batch size read from a traced tensor).
CoordinateShape = int | tf.Tensor | Sequence[int | tf.Tensor]
_CellClass = TypeVar("_CellClass", bound=type)


def register_cell(name: str) -> Callable[[_CellClass], _CellClass]:
  """Class decorator: the cell becomes `--optimizer=name` (registry.CELLS) and Keras-serializable
  (package "l2l_tf"), which the optimizer file format and keras.saving need."""

  def declare(cell_class: _CellClass) -> _CellClass:
    keras.saving.register_keras_serializable(package="l2l_tf")(cell_class)
    return registry.CELLS.register(name)(cell_class)

  return declare


class LearnedOptimizerCell(keras.layers.Layer, abc.ABC):
  """Base class of the learned-optimizer cells (Keras RNN cell protocol).

  A subclass overrides:
    state_size: the trailing size of each state tensor, in the order of the state list (an int
      for per-coordinate states [..., n, size]; None for a state whose trailing size is n).
    state_names: a name for each state tensor (exports and the Keras optimizer's slots).
    call(inputs, states) -> (updates, new_states): gradients [..., n, 1] to updates
      [..., n, 1] (already multiplied by output_scale) and the new state list.
  and, as needed:
    __init__(own arguments, **kwargs): validates its own arguments, passes the rest on.
    build(): creates the weights (no weight may depend on n).
    get_initial_state(batch_size): zero states (default: zeros of state_size per coordinate).
    get_config(): adds its own arguments to the base's (what from_config and the optimizer
      file format rebuild the cell from).
    coordinatewise: True if any split of the coordinates steps identically (no information
      shared between coordinates); the Keras optimizer then steps each variable alone.
  Register a new cell with @register_cell(name); tests/test_contracts.py then tests it.

  Args:
    preprocessing: name, config dict or Preprocessor applied to raw gradients.
    output_scale: the network's linear output is multiplied by this to give the update.
  """

  coordinatewise: bool = False

  def __init__(
    self,
    preprocessing: str | dict[str, Any] | preprocessing_lib.Preprocessor = "log_sign",
    output_scale: float = 0.1,
    **kwargs: Any,
  ) -> None:
    super().__init__(**kwargs)
    self.preprocessor = preprocessing_lib.get_preprocessor(preprocessing)
    self.output_scale = float(output_scale)

  @property
  @abc.abstractmethod
  def state_size(self) -> list[int | None]:
    """Trailing size of each state tensor, in the order of the state list."""

  @property
  @abc.abstractmethod
  def state_names(self) -> list[str]:
    """A name for each state tensor (used by exports and the Keras optimizer's slots)."""

  @abc.abstractmethod
  def call(
    self, inputs: tf.Tensor, states: Sequence[tf.Tensor]
  ) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """(updates [..., n, 1], new states) for gradients [..., n, 1] and the current states."""

  def get_initial_state(self, batch_size: CoordinateShape) -> list[tf.Tensor]:
    """Zero states for `batch_size` coordinates: an int n or a shape such as (B, n)."""
    shape = list(batch_size) if isinstance(batch_size, (list, tuple)) else [batch_size]
    return [tf.zeros(shape + [size], dtype=self.compute_dtype) for size in self.state_size]

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update(preprocessing=self.preprocessor.get_config(), output_scale=self.output_scale)
    return config
