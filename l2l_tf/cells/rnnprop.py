"""A coordinatewise LSTM that reads Adam-normalised gradients (RNNprop, Lv et al., ICML 2017).

The paper's LSTM reads log|g| and sign(g): the absolute scale of the gradient, which changes by
orders of magnitude over a run and between networks, so that a step learned for one scale is
wrong at another (the MNIST optimizer's steps stay too large late in a run). This cell reads
only scale-free inputs instead, the gradient and momenta divided by the root of the running
second moment, as Adam does, and bounds its step with a tanh:

    m_k <- b_k m_k + (1 - b_k) g          for each momentum decay b_k
    v   <- b_v v   + (1 - b_v) g^2
    x    = [g, m_1.., m_K] / (sqrt(v) + eps)     (m and v bias-corrected, as in Adam)
    update = output_scale * tanh(W h + w_skip . x + b),   h = LSTM(preprocessing(x))

w_skip starts at -initial_learning_rate / output_scale on the momentum nearest Adam's 0.9 and W
near zero: before meta-training the cell is (up to the tanh's bend) Adam with that learning
rate, a strong, stable start (Chen et al., NeurIPS 2020, warm-start learned optimizers from a
tuned baseline), and meta-training learns how to depart from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from l2l_tf.cells import base
from l2l_tf.cells import coordinatewise_lstm


@base.register_cell("rnnprop")
class RNNprop(coordinatewise_lstm.CoordinatewiseLSTM):
  """The coordinatewise LSTM on Adam-normalised gradient and momenta, with a bounded step.

  Args:
    hidden_sizes: units of each LSTM layer.
    momentum_decays: decay of each momentum the cell keeps (each is one input feature).
    second_moment_decay: decay of the running mean of g^2 that normalises the inputs.
    epsilon: added to sqrt(v) before dividing (Adam's epsilon).
    initial_learning_rate: the Adam learning rate the untrained cell imitates (see above).
    raw_gradient: also feed the raw gradient (first, before the normalised inputs): the paper's
      input, which carries the gradient's absolute scale. With bounded=False and
      initial_learning_rate=0 the cell then contains the paper's LSTM (growth.grow_from).
    bounded: squash the step with the tanh (False: update = output_scale * logits).
    **kwargs: LearnedOptimizerCell's: preprocessing (applied to each normalised input for the
      LSTM; the skip connection reads them unchanged), output_scale (the largest step any
      coordinate can take), and Keras layer arguments.
  """

  def __init__(
    self,
    hidden_sizes: Sequence[int] = (20, 20),
    momentum_decays: Sequence[float] = (0.5, 0.9, 0.99),
    second_moment_decay: float = 0.999,
    epsilon: float = 1e-8,
    initial_learning_rate: float = 0.03,
    raw_gradient: bool = False,
    bounded: bool = True,
    **kwargs: Any,
  ) -> None:
    self.raw_gradient = bool(raw_gradient)
    self.bounded = bool(bounded)
    self.momentum_decays = tuple(float(decay) for decay in momentum_decays)
    self.second_moment_decay = float(second_moment_decay)
    self.epsilon = float(epsilon)
    self.initial_learning_rate = float(initial_learning_rate)
    decays = self.momentum_decays + (self.second_moment_decay,)
    if not self.momentum_decays or not all(0 <= decay < 1 for decay in decays):
      raise ValueError(
        f"momentum_decays and second_moment_decay must lie in [0, 1) and at least one momentum "
        f"decay is needed; got {momentum_decays} and {second_moment_decay}"
      )
    if not self.epsilon > 0 or not self.initial_learning_rate >= 0:
      raise ValueError(
        f"epsilon must be > 0 and initial_learning_rate >= 0; got {epsilon} and "
        f"{initial_learning_rate}"
      )
    if not float(kwargs.get("output_scale", 0.1)) > 0:
      raise ValueError(
        f"rnnprop's output_scale bounds its step and must be > 0; got {kwargs['output_scale']}"
      )
    super().__init__(hidden_sizes=hidden_sizes, **kwargs)

  @property
  def num_inputs(self) -> int:
    """Inputs per coordinate: the normalised gradient and momenta (and the raw gradient)."""
    return 1 + len(self.momentum_decays) + self.raw_gradient

  def build(self, input_shape: Sequence[int | None] | None = None) -> None:
    if self.built:
      return
    self.add_output_kernel(self.build_lstm_layers(self.num_inputs * self.preprocessor.num_features))
    # The skip starts as Adam: weight on the momentum whose decay is nearest Adam's 0.9.
    adam_like = min(
      range(len(self.momentum_decays)), key=lambda k: abs(self.momentum_decays[k] - 0.9)
    )
    skip = [0.0] * self.num_inputs
    skip[self.raw_gradient + 1 + adam_like] = -self.initial_learning_rate / self.output_scale
    self.skip_kernel = self.add_weight(
      name="skip_kernel",
      shape=(self.num_inputs, 1),
      # Not keras.initializers.Constant, which rounds to float32 in a float64 cell.
      initializer=lambda shape, dtype=None: tf.constant(skip, dtype, shape),
    )
    self.output_bias = self.add_weight(name="output_bias", shape=(1,), initializer="zeros")
    self.built = True

  @property
  def state_size(self) -> list[int | None]:
    return super().state_size + [len(self.momentum_decays), 1, 1]

  @property
  def state_names(self) -> list[str]:
    return super().state_names + ["momentum", "second_moment", "step_count"]

  def call(
    self, inputs: tf.Tensor, states: Sequence[tf.Tensor]
  ) -> tuple[tf.Tensor, list[tf.Tensor]]:
    shape = tf.shape(inputs)
    dtype = inputs.dtype
    num_momenta = len(self.momentum_decays)
    g = tf.reshape(inputs, [-1, 1])
    momentum = tf.reshape(states[-3], [-1, num_momenta])
    second_moment = tf.reshape(states[-2], [-1, 1])
    count = tf.reshape(states[-1], [-1, 1]) + 1
    # tf.constant, not tf.cast: a Python float would be rounded to float32 first.
    decays = tf.constant(self.momentum_decays, dtype)
    decay_v = tf.constant(self.second_moment_decay, dtype)
    momentum = decays * momentum + (1 - decays) * g
    second_moment = decay_v * second_moment + (1 - decay_v) * tf.square(g)
    # Bias correction: zero-initialised averages are too small by 1 - decay^count.
    corrected_m = momentum / (1 - tf.pow(decays, count))
    corrected_v = second_moment / (1 - tf.pow(decay_v, count))
    scale = tf.sqrt(corrected_v) + tf.constant(self.epsilon, dtype)
    cell_inputs = tf.concat([g, corrected_m], axis=-1) / scale
    if self.raw_gradient:
      cell_inputs = tf.concat([g, cell_inputs], axis=-1)
    # [rows, num_inputs] -> [rows, num_inputs * num_features], input by input.
    features = tf.reshape(self.preprocessor(tf.reshape(cell_inputs, [-1, 1])), [tf.shape(g)[0], -1])
    h, lstm_states = self.run_lstm_layers(features, states, shape)
    logits = (
      tf.matmul(h, self.output_kernel) + tf.matmul(cell_inputs, self.skip_kernel) + self.output_bias
    )
    if self.bounded:
      logits = tf.tanh(logits)
    updates = logits * tf.constant(self.output_scale, dtype)
    new_states = lstm_states + [momentum, second_moment, count]
    return tf.reshape(updates, shape), [
      coordinatewise_lstm.per_coordinate(s, shape) for s in new_states
    ]

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update(
      momentum_decays=list(self.momentum_decays),
      second_moment_decay=self.second_moment_decay,
      epsilon=self.epsilon,
      initial_learning_rate=self.initial_learning_rate,
      raw_gradient=self.raw_gradient,
      bounded=self.bounded,
    )
    return config
