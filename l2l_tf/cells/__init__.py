"""Learned-optimizer cells: Keras RNN cells that map gradients to updates."""

from l2l_tf.cells.base import LearnedOptimizerCell
from l2l_tf.cells.coordinatewise_lstm import CoordinatewiseLSTM
from l2l_tf.cells.gac import GlobalAveragingLSTM
from l2l_tf.cells.ntm_bfgs import NTMBFGS
from l2l_tf.cells.ntm_bfgs import NTMLBFGS
from l2l_tf.cells.ntm_bfgs import NeuralTuringMachineCell
from l2l_tf.cells.rnnprop import RNNprop

__all__ = [
  "LearnedOptimizerCell",
  "CoordinatewiseLSTM",
  "GlobalAveragingLSTM",
  "NTMBFGS",
  "NTMLBFGS",
  "NeuralTuringMachineCell",
  "RNNprop",
]
