"""The protocol every learned-optimizer cell follows: a Keras RNN cell over coordinates.

A cell reads raw gradients and returns updates, one coordinate per row:

    updates, new_states = cell(gradients, states)

gradients and updates have shape [..., n, 1]: n coordinates of one problem instance, with any
leading batch of independent instances. States are a flat list of tensors; per-coordinate
states have shape [..., n, units], and shared states (a memory) have shapes of their own.
Weights never depend on n, so one cell steps any number of coordinates.
"""
import keras
import tensorflow as tf

from l2l_tf import preprocessing as preprocessing_lib


class LearnedOptimizerCell(keras.layers.Layer):
  """Base class of the learned-optimizer cells (Keras RNN cell protocol).

  Args:
    preprocessing: name, config dict or Preprocessor applied to raw gradients.
    output_scale: the network's linear output is multiplied by this to give the update.
  """

  coordinatewise = False  # True: any split of the coordinates steps identically (no sharing)

  def __init__(self, preprocessing="log_sign", output_scale=0.1, **kwargs):
    super().__init__(**kwargs)
    self.preprocessor = preprocessing_lib.get_preprocessor(preprocessing)
    self.output_scale = float(output_scale)

  @property
  def state_size(self):
    """Per-coordinate state sizes, in the order of the state list."""
    raise NotImplementedError

  @property
  def state_names(self):
    """A name for each state tensor (used by exports and the Keras optimizer's slots)."""
    raise NotImplementedError

  def get_initial_state(self, batch_size):
    """Zero states for `batch_size` coordinates: an int n or a shape such as (B, n)."""
    shape = list(batch_size) if isinstance(batch_size, (list, tuple)) else [batch_size]
    return [tf.zeros(shape + [size], dtype=self.compute_dtype) for size in self.state_size]

  def get_config(self):
    config = super().get_config()
    config.update(preprocessing=self.preprocessor.get_config(), output_scale=self.output_scale)
    return config
