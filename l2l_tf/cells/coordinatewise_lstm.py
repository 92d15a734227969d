"""The paper's coordinatewise LSTM optimizer (Section 2.1)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import keras
import tensorflow as tf

from l2l_tf import kernels
from l2l_tf.cells import base

# How lstm_step computes: "graph" (TensorFlow ops; any device, XLA) or "native" (the CPU custom
# op pair of l2l_tf/kernels, faster on CPU, no XLA). Chosen when a graph is traced.
LSTM_KERNELS = ("graph", "native")
_lstm_kernel = "graph"


@contextlib.contextmanager
def lstm_kernel(name: str) -> Iterator[None]:
  """Within the block, the LSTM cells trace with kernel `name` (one of LSTM_KERNELS):

      with l2l_tf.lstm_kernel("native"):
        trainer.train(output_dir)

  "native" builds the custom ops first (kernels.load), so a missing compiler fails here, before
  any work, with kernels.NativeKernelError. Graphs traced inside the block keep their kernel;
  exports always use the graph ops.
  """
  global _lstm_kernel
  if name not in LSTM_KERNELS:
    raise ValueError(f"lstm kernel must be one of {', '.join(LSTM_KERNELS)}, got {name!r}")
  if name == "native":
    kernels.load()
  previous, _lstm_kernel = _lstm_kernel, name
  try:
    yield
  finally:
    _lstm_kernel = previous


def lstm_gate_scales(units, dtype):
  """Column scales that let one tanh compute all four gates.

  sigmoid(z) = 0.5 * tanh(z / 2) + 0.5, so scaling the input, forget and output columns by 0.5
  turns the three sigmoids and the candidate tanh into a single tanh over the [.., 4 * units]
  pre-activations: one transcendental pass instead of two, a large share of the CPU cost.
  """
  half = tf.fill([units], tf.constant(0.5, dtype))
  one = tf.ones([units], dtype)
  return tf.concat([half, half, one, half], axis=0)  # gate order: input, forget, cell, output


def lstm_step_reference(inputs, h, c, kernel, recurrent_kernel, bias):
  """One LSTM step in the textbook form with plain ops (autodiff reference for lstm_step)."""
  z = tf.matmul(inputs, kernel) + tf.matmul(h, recurrent_kernel) + bias
  z_i, z_f, z_g, z_o = tf.split(z, 4, axis=-1)
  new_c = tf.sigmoid(z_f) * c + tf.sigmoid(z_i) * tf.tanh(z_g)
  return tf.sigmoid(z_o) * tf.tanh(new_c), new_c


def _cell_forward(t, c):
  """Gate math on t = tanh(scaled pre-activations) [rows, 4u]: returns (new c, output gate)."""
  t_i, t_f, g, t_o = tf.split(t, 4, axis=-1)
  return (0.5 * t_f + 0.5) * c + (0.5 * t_i + 0.5) * g, 0.5 * t_o + 0.5


def _cell_backward(d_h, d_c, c, t, tanh_c):
  """Backward of _cell_forward and the tanh: (dL/dz, dL/dc_prev) from upstream dL/dh, dL/dc."""
  t_i, t_f, g, t_o = tf.split(t, 4, axis=-1)
  d_c = d_c + d_h * (0.5 * t_o + 0.5) * (1 - tf.square(tanh_c))
  d_z = tf.concat(
    [
      0.5 * d_c * g * (1 - tf.square(t_i)),
      0.5 * d_c * c * (1 - tf.square(t_f)),
      d_c * (0.5 * t_i + 0.5) * (1 - tf.square(g)),
      0.5 * d_h * tanh_c * (1 - tf.square(t_o)),
    ],
    axis=-1,
  )
  return d_z, d_c * (0.5 * t_f + 0.5)


# The gate math is a chain of ~20 elementwise ops; as separate TF kernels (Eigen, no AVX-512 in
# this wheel) each is a pass over memory. XLA fuses each direction into one or two loops. The
# matmuls stay on TensorFlow's oneDNN kernels (faster here than XLA's), as does tanh(c) below.
_fused_cell_forward = tf.function(_cell_forward, jit_compile=True, autograph=False)
_fused_cell_backward = tf.function(_cell_backward, jit_compile=True, autograph=False)


@tf.custom_gradient
def _fused_lstm(x, h, c, kernel, recurrent_kernel, bias):
  """lstm_step with a hand-written backward pass."""
  units = h.shape[-1]
  scales = lstm_gate_scales(units, x.dtype)
  # u = [x, h, 1] against [kernel; recurrent; 0]: one matmul u^T dL/dz then gives the weight
  # and the bias gradients, without another pass over dL/dz [rows, 4u] for the bias.
  stacked = tf.concat([kernel, recurrent_kernel, tf.zeros_like(bias)[None]], axis=0) * scales
  u = tf.concat([x, h, tf.ones_like(c[:, :1])], axis=-1)
  # MatMul + BiasAdd + Tanh become one oneDNN kernel (grappler remapper): z is never stored.
  t = tf.tanh(tf.matmul(u, stacked) + bias * scales)
  new_c, o = _fused_cell_forward(t, c)
  # TF's tanh kernel is several times faster than XLA:CPU's on [rows, 20] arrays.
  tanh_c = tf.tanh(new_c)
  new_h = o * tanh_c

  def gradient(d_h, d_c):  # TF passes zeros, not None, for an output without a gradient
    d_z, d_c_prev = _fused_cell_backward(d_h, d_c, c, t, tanh_c)
    kernel_x, kernel_h, _ = tf.split(stacked, [-1, units, 1])
    # Two matmuls rather than one and a split of its [rows, features + units] result; the x
    # one is pruned from the graph where x needs no gradient (the first layer's inputs).
    d_x = tf.matmul(d_z, kernel_x, transpose_b=True)
    d_h_prev = tf.matmul(d_z, kernel_h, transpose_b=True)
    d_kernel, d_recurrent, d_bias = tf.split(
      tf.matmul(u, d_z, transpose_a=True) * scales, [-1, units, 1]
    )
    return d_x, d_h_prev, d_c_prev, d_kernel, d_recurrent, d_bias[0]

  return (new_h, new_c), gradient


def _stacked_weights(kernel, recurrent_kernel, bias):
  """A layer's weights as the native ops take them: [kernel; recurrent] and bias, both scaled
  by lstm_gate_scales (one tanh for all gates)."""
  scales = lstm_gate_scales(recurrent_kernel.shape[0], kernel.dtype)
  return tf.concat([kernel, recurrent_kernel], axis=0) * scales, bias * scales, scales


@tf.custom_gradient
def _native_stack(x, *tensors):
  """The stacked LSTM and its output projection on the native ops (l2l_tf/kernels).

  tensors: each layer's h, then c, kernel, recurrent kernel, bias (5 groups of `layers`), then
  the output kernel [top units, outputs]. Returns (h_top output_kernel, new h..., new c...).
  """
  ops = kernels.load()
  layers = (len(tensors) - 1) // 5
  h, c, kernel, recurrent, bias = (list(tensors[i * layers : (i + 1) * layers]) for i in range(5))
  output_kernel = tensors[-1]
  weights, scaled_bias, scales = zip(*map(_stacked_weights, kernel, recurrent, bias))
  weights, scaled_bias = list(weights), list(scaled_bias)
  projection, new_h, new_c = ops.l2l_lstm_stack(x, h, c, weights, scaled_bias, output_kernel)

  def gradient(d_projection, *d_states):
    d_states = [tf.zeros_like(s) if d is None else d for d, s in zip(d_states, new_h + new_c)]
    d_x, d_h, d_c, d_weights, d_bias, d_output_kernel = ops.l2l_lstm_stack_grad(
      d_projection,
      d_states[:layers],
      d_states[layers:],
      x,
      h,
      c,
      new_h,
      weights,
      scaled_bias,
      output_kernel,
    )
    d_kernel, d_recurrent = zip(
      *(tf.split(d * s, [-1, r.shape[0]]) for d, s, r in zip(d_weights, scales, recurrent))
    )
    d_bias = [d * s for d, s in zip(d_bias, scales)]
    return [d_x, *d_h, *d_c, *d_kernel, *d_recurrent, *d_bias, d_output_kernel]

  return (projection, *new_h, *new_c), gradient


def native_lstm_stack(x, states, layer_weights, output_kernel):
  """The stacked LSTM on rows x [rows, features] in one native op pair, each block of rows
  running every layer and the output while in cache.

  states: [h, c] per layer, each [rows, units]; layer_weights: (kernel, recurrent kernel,
  bias) per layer; output_kernel: [top units, outputs] (outputs may be 0).
  Returns (top h @ output_kernel [rows, outputs], new states [h, c] per layer).
  """
  layers = len(layer_weights)
  weights = [tf.convert_to_tensor(w) for group in zip(*layer_weights) for w in group]
  outputs = _native_stack(x, *states[0::2], *states[1::2], *weights, output_kernel)
  new_h, new_c = outputs[1 : 1 + layers], outputs[1 + layers :]
  return outputs[0], [s for pair in zip(new_h, new_c) for s in pair]


def lstm_step(inputs, h, c, kernel, recurrent_kernel, bias):
  """One LSTM step on rows of `inputs` [rows, features]; returns (h, c).

  Gates are ordered input, forget, cell, output. Same function as lstm_step_reference, computed
  with one tanh for all gates (lstm_gate_scales) and a hand-written backward pass: by default
  oneDNN matmuls and XLA-fused elementwise gate math (_fused_lstm); under
  lstm_kernel("native") the CPU custom ops (native_lstm_stack of one layer).
  """
  weights = [tf.convert_to_tensor(w) for w in (kernel, recurrent_kernel, bias)]
  if _lstm_kernel == "native":
    no_output = tf.zeros([h.shape[-1], 0], h.dtype)
    _, (new_h, new_c) = native_lstm_stack(inputs, [h, c], [weights], no_output)
    return new_h, new_c
  return _fused_lstm(inputs, h, c, *weights)


def per_coordinate(rows, shape):
  """Rows [rows, k] back to [..., n, k] for a cell whose inputs have the dynamic shape `shape`."""
  return tf.reshape(rows, tf.concat([shape[:-1], tf.shape(rows)[-1:]], axis=0))


@base.register_cell("lstm")
class CoordinatewiseLSTM(base.LearnedOptimizerCell):
  """A stacked LSTM applied to every coordinate with shared weights.

  Each coordinate has its own hidden state; weights are shared, so the parameter count does
  not depend on the number of coordinates and the cell is equivariant to their order.

  Args:
    hidden_sizes: units of each LSTM layer (paper: two layers of 20).
    **kwargs: LearnedOptimizerCell's: preprocessing (paper: log_sign with p=10; identity on
      quadratics), output_scale (update = output_scale * linear(h_last); paper: 0.1, 1 on
      quadratics), and Keras layer arguments.
  """

  coordinatewise = True  # each coordinate's update depends on its own gradients only

  def __init__(self, hidden_sizes: Sequence[int] = (20, 20), **kwargs: Any) -> None:
    super().__init__(**kwargs)
    self.hidden_sizes = tuple(int(units) for units in hidden_sizes)
    if not self.hidden_sizes or min(self.hidden_sizes) <= 0:
      raise ValueError(f"hidden_sizes must be positive integers, got {hidden_sizes}")
    self.build()

  def build(self, input_shape: Sequence[int | None] | None = None) -> None:
    if self.built:
      return
    self.add_output_kernel(self.build_lstm_layers(self.preprocessor.num_features))
    self.output_bias = self.add_weight(name="output_bias", shape=(1,), initializer="zeros")
    self.built = True

  def build_lstm_layers(self, in_features: int) -> int:
    """Creates the stacked LSTM's weights; returns the top layer's width."""
    self.lstm_weights = []
    for layer, units in enumerate(self.hidden_sizes):
      kernel = self.add_weight(
        name=f"lstm_{layer}_kernel", shape=(in_features, 4 * units), initializer="glorot_uniform"
      )
      recurrent = self.add_weight(
        name=f"lstm_{layer}_recurrent_kernel", shape=(units, 4 * units), initializer="orthogonal"
      )
      # Forget gates start open (bias 1), the usual LSTM choice for long memories.
      bias = self.add_weight(
        name=f"lstm_{layer}_bias",
        shape=(4 * units,),
        initializer=keras.initializers.Constant(
          [0.0] * units + [1.0] * units + [0.0] * (2 * units)
        ),
      )
      self.lstm_weights.append((kernel, recurrent, bias))
      in_features = units
    return in_features

  def add_output_kernel(self, top: int) -> None:
    """Creates the linear output's kernel on the top layer's `top` units (small: early updates
    stay near zero)."""
    self.output_kernel = self.add_weight(
      name="output_kernel", shape=(top, 1), initializer=keras.initializers.RandomNormal(stddev=0.01)
    )

  @property
  def state_size(self) -> list[int | None]:
    return [units for units in self.hidden_sizes for _ in ("h", "c")]

  @property
  def state_names(self) -> list[str]:
    return [
      f"lstm_{layer}_{kind}" for layer in range(len(self.hidden_sizes)) for kind in ("h", "c")
    ]

  def run_lstm_layers(
    self,
    x: tf.Tensor,
    states: Sequence[tf.Tensor],
    shape: tf.Tensor,
    output_kernel: tf.Tensor | None = None,
  ) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """The stacked LSTM on rows x [rows, features]; returns (top h [rows, units], new states),
    or with output_kernel [units, outputs], (top h @ output_kernel, new states).

    states: the cell's state list, whose first 2 * layers entries are each layer's (h, c)
    [..., n, units]; shape: the dynamic shape of the cell's inputs [..., n, 1]. The new states
    come back as [h, c] per layer, each [rows, units]. Under lstm_kernel("native"), a cell
    whose transform_hidden is the identity runs all layers and the output in one op pair.
    """
    rows = [
      tf.reshape(states[i], [-1, self.hidden_sizes[i // 2]])
      for i in range(2 * len(self.hidden_sizes))
    ]
    if _lstm_kernel == "native" and type(self).transform_hidden is _identity_transform:
      kernel = (
        tf.zeros([self.hidden_sizes[-1], 0], x.dtype) if output_kernel is None else output_kernel
      )
      projection, new_states = native_lstm_stack(x, rows, self.lstm_weights, kernel)
      return (new_states[-2] if output_kernel is None else projection), new_states
    new_states = []
    for layer, (kernel, recurrent, bias) in enumerate(self.lstm_weights):
      h, c = lstm_step(x, rows[2 * layer], rows[2 * layer + 1], kernel, recurrent, bias)
      h = self.transform_hidden(h, shape, layer)
      new_states += [h, c]
      x = h
    return (x if output_kernel is None else tf.matmul(x, output_kernel)), new_states

  def call(
    self, inputs: tf.Tensor, states: Sequence[tf.Tensor]
  ) -> tuple[tf.Tensor, list[tf.Tensor]]:
    shape = tf.shape(inputs)
    projection, new_states = self.run_lstm_layers(
      self.preprocessor(tf.reshape(inputs, [-1, 1])),
      states,
      shape,
      tf.convert_to_tensor(self.output_kernel),
    )
    # tf.constant, not tf.cast: a Python float would be rounded to float32 first.
    updates = (projection + self.output_bias) * tf.constant(self.output_scale, projection.dtype)
    return tf.reshape(updates, shape), [per_coordinate(s, shape) for s in new_states]

  def transform_hidden(self, h: tf.Tensor, shape: tf.Tensor, layer: int) -> tf.Tensor:
    """Hook for subclasses: the activations layer `layer` emits, upwards and to itself."""
    del shape, layer
    return h

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update(hidden_sizes=list(self.hidden_sizes))
    return config


_identity_transform = CoordinatewiseLSTM.transform_hidden
