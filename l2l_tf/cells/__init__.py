"""Learned-optimizer cells: Keras RNN cells that map gradients to updates."""
from l2l_tf.cells.base import LearnedOptimizerCell
from l2l_tf.cells.coordinatewise_lstm import CoordinatewiseLSTM
