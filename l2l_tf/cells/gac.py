"""LSTM+GAC: a coordinatewise LSTM with Global Averaging Cells (paper Section 2.1, Appendix D).

In every LSTM layer a configurable number of units are Global Averaging Cells (GACs): after the
LSTM step, the activation h each such unit emits (upwards to the next layer and to itself at the
next step) is replaced by its mean over the n coordinates of the same problem instance. The
mean is taken over axis -2 of the [..., n, units] view, never across the leading batch of
independent instances. GACs let coordinates share information (for example the gradient norm,
which is enough to implement L2 gradient clipping) while every weight stays shared, so the cell
still runs on any number of coordinates and is equivariant to their order.

Which units are GACs: the LAST k units of each layer (k per layer, from
`global_averaging_units` or `global_averaging_fraction`). Cell states c stay per coordinate;
only the emitted h is averaged. GACs add no weights.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from l2l_tf.cells import base
from l2l_tf.cells import coordinatewise_lstm

DEFAULT_GLOBAL_AVERAGING_UNITS = 2  # the paper's "2 GACs" that suffice to simulate BFGS


def _per_layer(value, num_layers, name):
  """A scalar or a per-layer sequence as a list of num_layers values."""
  if isinstance(value, (list, tuple)):
    if len(value) != num_layers:
      raise ValueError(
        f"{name} has {len(value)} entries but the LSTM has {num_layers} layers; "
        "give one value per layer or a single value for all layers"
      )
    return list(value)
  return [value] * num_layers


def resolve_global_averaging_units(
  hidden_sizes, global_averaging_units=None, global_averaging_fraction=None
):
  """Number of Global Averaging Cells in each layer, validated.

  Args:
    hidden_sizes: units of each LSTM layer.
    global_averaging_units: an int (every layer) or one int per layer, each in [0, units].
    global_averaging_fraction: a fraction in [0, 1] (every layer) or one per layer; the count
      is round(fraction * units). Give at most one of the two; with neither, every layer gets
      min(2, units) GACs.
  Returns:
    list of ints, one per layer.
  """
  hidden_sizes = list(hidden_sizes)
  if global_averaging_units is not None and global_averaging_fraction is not None:
    raise ValueError(
      "Give either global_averaging_units or global_averaging_fraction, not both "
      f"(got {global_averaging_units!r} and {global_averaging_fraction!r})"
    )
  if global_averaging_fraction is not None:
    fractions = _per_layer(
      global_averaging_fraction, len(hidden_sizes), "global_averaging_fraction"
    )
    counts = []
    for layer, (fraction, units) in enumerate(zip(fractions, hidden_sizes)):
      if (
        isinstance(fraction, bool)
        or not isinstance(fraction, numbers.Real)
        or not math.isfinite(fraction)
        or not 0.0 <= fraction <= 1.0
      ):
        raise ValueError(
          f"global_averaging_fraction must be in [0, 1]; got {fraction!r} for layer {layer}"
        )
      counts.append(int(round(float(fraction) * units)))
    return counts
  if global_averaging_units is None:
    return [min(DEFAULT_GLOBAL_AVERAGING_UNITS, units) for units in hidden_sizes]
  counts = _per_layer(global_averaging_units, len(hidden_sizes), "global_averaging_units")
  for layer, (count, units) in enumerate(zip(counts, hidden_sizes)):
    if (
      isinstance(count, bool) or not isinstance(count, numbers.Integral) or not 0 <= count <= units
    ):
      raise ValueError(
        f"global_averaging_units must be an integer in [0, {units}] for layer "
        f"{layer} ({units} units); got {count!r}"
      )
  return [int(count) for count in counts]


def global_average(h, shape, num_global):
  """Replaces the last `num_global` columns of h by their mean over each instance's coordinates.

  Args:
    h: [rows, units] activations, rows = prod(shape[:-1]) in the order of the cell's inputs.
    shape: the dynamic shape of the cell's inputs [..., n, 1].
    num_global: how many trailing units are Global Averaging Cells (a Python int).
  """
  if num_global == 0:
    return h
  units = h.shape[-1]
  per_instance = tf.reshape(h, tf.stack([-1, shape[-2], units]))
  local, shared = tf.split(per_instance, [units - num_global, num_global], axis=-1)
  shared = tf.broadcast_to(tf.reduce_mean(shared, axis=-2, keepdims=True), tf.shape(shared))
  return tf.reshape(tf.concat([local, shared], axis=-1), tf.shape(h))


@base.register_cell("lstm_gac")
class GlobalAveragingLSTM(coordinatewise_lstm.CoordinatewiseLSTM):
  """LSTM+GAC: a coordinatewise LSTM whose last k units per layer average over coordinates.

  Same weights, states and protocol as CoordinatewiseLSTM (inputs [..., n, 1] are the n
  coordinates of one instance, with any leading batch of independent instances).

  Args:
    global_averaging_units: GACs per layer: an int or one int per layer, in [0, units].
    global_averaging_fraction: alternatively the fraction of each layer's units, in [0, 1].
      With neither given, each layer has 2 GACs (the paper's choice).
    **kwargs: CoordinatewiseLSTM's (hidden_sizes, preprocessing, output_scale, ...).
  """

  coordinatewise = False  # GACs average over all coordinates of the instance

  def __init__(
    self,
    global_averaging_units: int | Sequence[int] | None = None,
    global_averaging_fraction: float | Sequence[float] | None = None,
    **kwargs: Any,
  ) -> None:
    super().__init__(**kwargs)
    self.global_averaging_units = resolve_global_averaging_units(
      self.hidden_sizes, global_averaging_units, global_averaging_fraction
    )

  def transform_hidden(self, h: tf.Tensor, shape: tf.Tensor, layer: int) -> tf.Tensor:
    return global_average(h, shape, self.global_averaging_units[layer])

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update(global_averaging_units=list(self.global_averaging_units))
    return config
