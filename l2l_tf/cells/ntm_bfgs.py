"""NTM-BFGS and NTM-L-BFGS: an LSTM+GAC controller with a low-rank memory (paper Appendix D).

The BFGS skeleton g_t = read(M_t, theta_t), M_{t+1} = write(M_t, theta_t, g_t), with an
n x n memory M shared by the n coordinates of one problem instance (one memory per instance of
a batch) and a controller that runs coordinatewise with shared weights.

Exact parametrisation (per step t, for every coordinate j of an instance; R read heads, W write
heads):

  controller input  x_t^j = [preprocess(grad_t^j), i_{t-1}^j]      (F + R features; i_{-1} = 0)
                    the read values are fed back raw (no preprocessing). The first layer's
                    kernel rows for the read start at zero, so a fresh cell computes the same
                    kind of function as LSTM+GAC and meta-training opens the memory path only
                    as far as it helps (with them random, the growing reads perturbed the
                    controller from the first step and NTM-BFGS trained worse than the LSTM).
  controller        h_t^j = LSTM+GAC(x_t^j, state^j): the stacked LSTM of CoordinatewiseLSTM in
                    which the last k units of every layer are Global Averaging Cells (their h
                    is replaced by its mean over the instance's coordinates; see gac.py).
  heads             linear layers on the top hidden state h_t^j:
                      read keys      r_t^j   = h_t^j K_r + c_r                 (R scalars)
                      write vectors  a_t^j   = h_t^j K_a + c_a,
                                     b_t^j   = h_t^j K_b + c_b                 (W scalars each)
                      direct output  o_t^j   = h_t^j K_o + c_o                 (1 scalar)
                    Keys and writes are bounded by h's range, so the memory grows at most
                    linearly in t. (Heads that also read the raw gradient let the memory grow
                    as g^2 per step; on the unpreprocessed quadratics the first meta-update
                    that opened the read path then diverged.)
  read              i_t = M_t r_t  (stacked over coordinates: [n, R]; coordinate j gets row j).
                    The read uses the memory BEFORE this step's write.
  write             M_{t+1} = M_t + sum_heads a_t b_t^T = M_t + A_t B_t^T  (rank <= W), M_0 = 0.
  update            update_t^j = output_scale * (o_t^j + i_t^j . w_read)   (w_read: R weights)
                    so the current read can shape this step's update (BFGS: update = -H g is a
                    read with key r = g and w_read = -1), and it is also fed to the controller
                    at the next step.

States, in order: (h, c) of every LSTM layer ([..., n, units]), the last read i_t ([..., n, R]),
then the memory:
  NTMBFGS   memory M_t, [..., n, n]: O(n^2) per instance, so get_initial_state refuses more
            than `max_dense_coordinates` coordinates before allocating anything.
  NTMLBFGS  the last k steps' write vectors, A and B windows [..., n, k * W] (oldest first;
            each step drops the oldest W columns and appends a_t, b_t). M_t = A B^T is never
            formed: the read is A (B^T r), O(n k W R). While the window covers the whole
            history (t <= k steps) it computes exactly the same function as NTMBFGS with the
            same weights; afterwards it forgets the oldest writes, as L-BFGS does.

`state_size` lists the trailing size of each state: an int for per-coordinate states
[..., n, size], and None for the dense memory, whose trailing size is n (one column per
coordinate; see get_initial_state).
"""

from __future__ import annotations

import abc
import numbers
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from l2l_tf.cells import base
from l2l_tf.cells import coordinatewise_lstm
from l2l_tf.cells import gac

DEFAULT_MAX_DENSE_COORDINATES = 4096


def _check_int(name, value, minimum):
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  return int(value)


class NeuralTuringMachineCell(gac.GlobalAveragingLSTM):
  """Shared machinery of NTMBFGS and NTMLBFGS: controller, heads and update (see module doc).

  A subclass defines the memory: memory_state_size, memory_state_names, initial_memory,
  read_memory and write_memory.

  Args:
    num_read_heads: R >= 1 read keys per coordinate (paper: 1).
    num_write_heads: W >= 1 rank-one writes per step (paper: 3).
    **kwargs: GlobalAveragingLSTM's: hidden_sizes (the controller's layers), the controller's
      GACs (global_averaging_units or global_averaging_fraction), preprocessing, output_scale.
  """

  def __init__(self, num_read_heads: int = 1, num_write_heads: int = 3, **kwargs: Any) -> None:
    # Set before the base constructor: it builds the weights, whose shapes depend on them.
    self.num_read_heads = _check_int("num_read_heads", num_read_heads, 1)
    self.num_write_heads = _check_int("num_write_heads", num_write_heads, 1)
    super().__init__(**kwargs)

  def build(self, input_shape: Sequence[int | None] | None = None) -> None:
    if self.built:
      return
    gradient_features = self.preprocessor.num_features
    in_features = self.build_lstm_layers(gradient_features + self.num_read_heads)
    # Memory path closed at the start: zero the first layer's rows for the fed-back read.
    kernel = self.lstm_weights[0][0]
    kernel.assign(
      tf.concat([kernel[:gradient_features], tf.zeros_like(kernel[gradient_features:])], axis=0)
    )
    small = keras.initializers.RandomNormal(stddev=0.01)
    heads = "glorot_normal"  # read keys and write vectors start O(h): the memory path is open
    self.output_kernel = self.add_weight(
      name="output_kernel", shape=(in_features, 1), initializer=small
    )
    self.output_bias = self.add_weight(name="output_bias", shape=(1,), initializer="zeros")
    self.read_key_kernel = self.add_weight(
      name="read_key_kernel", shape=(in_features, self.num_read_heads), initializer=heads
    )
    self.read_key_bias = self.add_weight(
      name="read_key_bias", shape=(self.num_read_heads,), initializer="zeros"
    )
    # Columns [0, W) give a_t, columns [W, 2W) give b_t.
    self.write_kernel = self.add_weight(
      name="write_kernel", shape=(in_features, 2 * self.num_write_heads), initializer=heads
    )
    self.write_bias = self.add_weight(
      name="write_bias", shape=(2 * self.num_write_heads,), initializer="zeros"
    )
    # Zero: the update starts as the LSTM+GAC's (reads only feed the controller), so a fresh
    # cell does not diverge through the growing memory; meta-training opens the read path.
    self.read_output_kernel = self.add_weight(
      name="read_output_kernel", shape=(self.num_read_heads, 1), initializer="zeros"
    )
    self.built = True

  # -- memory interface (subclasses) ------------------------------------------------------------

  @property
  @abc.abstractmethod
  def memory_state_size(self) -> list[int | None]:
    """Trailing size of each memory state (None: n)."""

  @property
  @abc.abstractmethod
  def memory_state_names(self) -> list[str]:
    """A name for each memory state."""

  @abc.abstractmethod
  def initial_memory(self, shape: list[int | tf.Tensor]) -> list[tf.Tensor]:
    """Zero memory states for a [..., n] coordinate shape (a list of ints / scalar tensors)."""

  @abc.abstractmethod
  def read_memory(self, memory: Sequence[tf.Tensor], keys: tf.Tensor) -> tf.Tensor:
    """i = M r for keys [..., n, R]; returns [..., n, R]."""

  @abc.abstractmethod
  def write_memory(
    self, memory: Sequence[tf.Tensor], a: tf.Tensor, b: tf.Tensor
  ) -> list[tf.Tensor]:
    """Memory states holding M + A B^T, for write vectors a, b [..., n, W]."""

  # -- cell protocol ----------------------------------------------------------------------------

  @property
  def _num_lstm_states(self):
    return 2 * len(self.hidden_sizes)

  @property
  def state_size(self) -> list[int | None]:
    return (
      [units for units in self.hidden_sizes for _ in ("h", "c")]
      + [self.num_read_heads]
      + list(self.memory_state_size)
    )

  @property
  def state_names(self) -> list[str]:
    return (
      [f"lstm_{layer}_{kind}" for layer in range(len(self.hidden_sizes)) for kind in ("h", "c")]
      + ["read"]
      + list(self.memory_state_names)
    )

  def get_initial_state(self, batch_size: base.CoordinateShape) -> list[tf.Tensor]:
    shape = list(batch_size) if isinstance(batch_size, (list, tuple)) else [batch_size]
    memory = self.initial_memory(shape)  # first: it may refuse the size before any allocation
    per_coordinate = [
      tf.zeros(shape + [size], dtype=self.compute_dtype)
      for size in self.state_size[: self._num_lstm_states + 1]
    ]
    return per_coordinate + memory

  def controller_step(
    self, inputs: tf.Tensor, states: Sequence[tf.Tensor]
  ) -> dict[str, tf.Tensor | list[tf.Tensor]]:
    """Runs the controller and heads (no memory access).

    Args:
      inputs: gradients [..., n, 1].
      states: the cell's state list (only the LSTM states and the previous read are used).
    Returns:
      dict with "direct_output" [..., n, 1] (o_t, before output_scale), "read_keys"
      [..., n, R], "write_a" and "write_b" [..., n, W], and "lstm_states" (list, each
      [..., n, units]).
    """
    shape = tf.shape(inputs)
    per_coordinate = lambda t: coordinatewise_lstm.per_coordinate(t, shape)
    previous_read = tf.reshape(states[self._num_lstm_states], [-1, self.num_read_heads])
    x = tf.concat([self.preprocessor(tf.reshape(inputs, [-1, 1])), previous_read], axis=-1)
    x, lstm_states = self.run_lstm_layers(x, states, shape)
    # All heads in one matmul: [rows, units] x [units, 1 + R + 2W].
    heads = tf.matmul(
      x, tf.concat([self.output_kernel, self.read_key_kernel, self.write_kernel], axis=1)
    )
    heads += tf.concat([self.output_bias, self.read_key_bias, self.write_bias], axis=0)
    output, keys, write_a, write_b = tf.split(
      heads, [1, self.num_read_heads, self.num_write_heads, self.num_write_heads], axis=-1
    )
    return {
      "direct_output": per_coordinate(output),
      "read_keys": per_coordinate(keys),
      "write_a": per_coordinate(write_a),
      "write_b": per_coordinate(write_b),
      "lstm_states": [per_coordinate(s) for s in lstm_states],
    }

  def call(
    self, inputs: tf.Tensor, states: Sequence[tf.Tensor]
  ) -> tuple[tf.Tensor, list[tf.Tensor]]:
    states = list(states)
    step = self.controller_step(inputs, states)
    memory = states[self._num_lstm_states + 1 :]
    read = self.read_memory(memory, step["read_keys"])
    new_memory = self.write_memory(memory, step["write_a"], step["write_b"])
    updates = (step["direct_output"] + tf.matmul(read, self.read_output_kernel)) * tf.constant(
      self.output_scale, inputs.dtype
    )  # not tf.cast: that rounds 0.1 to float32 first
    return updates, step["lstm_states"] + [read] + list(new_memory)

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update(num_read_heads=self.num_read_heads, num_write_heads=self.num_write_heads)
    return config


@base.register_cell("ntm_bfgs")
class NTMBFGS(NeuralTuringMachineCell):
  """NTM-BFGS: dense n x n memory per instance (see the module docstring).

  Args:
    max_dense_coordinates: the most coordinates per instance for which get_initial_state
      allocates the dense memory (4 n^2 bytes per instance in float32); more is refused with
      advice to use NTMLBFGS. Default 4096 (64 MiB per instance).
    **kwargs: NeuralTuringMachineCell's.
  """

  def __init__(
    self, max_dense_coordinates: int = DEFAULT_MAX_DENSE_COORDINATES, **kwargs: Any
  ) -> None:
    self.max_dense_coordinates = _check_int("max_dense_coordinates", max_dense_coordinates, 1)
    super().__init__(**kwargs)

  @property
  def memory_state_size(self) -> list[int | None]:
    return [None]  # trailing size n: the memory is [..., n, n]

  @property
  def memory_state_names(self) -> list[str]:
    return ["memory"]

  def _refusal(self, n=None):
    size = (
      "the number of coordinates"
      if n is None
      else f"{n} coordinates need {4.0 * n * n / 2**20:.1f} MiB per instance (float32),"
    )
    return (
      f"NTMBFGS keeps a dense n x n memory per problem instance: {size} over "
      f"max_dense_coordinates={self.max_dense_coordinates}. Use NTMLBFGS "
      "(--optimizer=ntm_lbfgs), whose sliding window of write vectors needs O(n k) memory, "
      "or raise max_dense_coordinates."
    )

  def initial_memory(self, shape: list[int | tf.Tensor]) -> list[tf.Tensor]:
    n = shape[-1]
    static_n = tf.get_static_value(n) if tf.is_tensor(n) else n
    if static_n is not None:
      if int(static_n) > self.max_dense_coordinates:
        raise ValueError(self._refusal(int(static_n)))
      return [tf.zeros(shape + [n], dtype=self.compute_dtype)]
    check = tf.debugging.assert_less_equal(
      tf.cast(n, tf.int64),
      tf.constant(self.max_dense_coordinates, tf.int64),
      message=self._refusal(),
    )
    with tf.control_dependencies([check]):
      return [tf.zeros(shape + [n], dtype=self.compute_dtype)]

  def read_memory(self, memory: Sequence[tf.Tensor], keys: tf.Tensor) -> tf.Tensor:
    return tf.matmul(memory[0], keys)

  def write_memory(
    self, memory: Sequence[tf.Tensor], a: tf.Tensor, b: tf.Tensor
  ) -> list[tf.Tensor]:
    return [memory[0] + tf.matmul(a, b, transpose_b=True)]

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update(max_dense_coordinates=self.max_dense_coordinates)
    return config


@base.register_cell("ntm_lbfgs")
class NTMLBFGS(NeuralTuringMachineCell):
  """NTM-L-BFGS: M_t = A B^T over a sliding window of the last k steps' writes, O(n k) memory.

  Args:
    window_size: k >= 1 steps kept; the windows hold k * num_write_heads vectors each.
    **kwargs: NeuralTuringMachineCell's.
  """

  def __init__(self, window_size: int = 10, **kwargs: Any) -> None:
    self.window_size = _check_int("window_size", window_size, 1)
    super().__init__(**kwargs)

  @property
  def memory_state_size(self) -> list[int | None]:
    return [self.window_size * self.num_write_heads] * 2

  @property
  def memory_state_names(self) -> list[str]:
    return ["write_a_window", "write_b_window"]

  def initial_memory(self, shape: list[int | tf.Tensor]) -> list[tf.Tensor]:
    return [tf.zeros(shape + [size], dtype=self.compute_dtype) for size in self.memory_state_size]

  def read_memory(self, memory: Sequence[tf.Tensor], keys: tf.Tensor) -> tf.Tensor:
    window_a, window_b = memory
    return tf.matmul(window_a, tf.matmul(window_b, keys, transpose_a=True))

  def write_memory(
    self, memory: Sequence[tf.Tensor], a: tf.Tensor, b: tf.Tensor
  ) -> list[tf.Tensor]:
    heads = self.num_write_heads
    return [tf.concat([window[..., heads:], new], axis=-1) for window, new in zip(memory, (a, b))]

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update(window_size=self.window_size)
    return config
