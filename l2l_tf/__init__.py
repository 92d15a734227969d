"""l2l_tf: learned optimizers (Andrychowicz et al., 2016) for TensorFlow 2 and Keras 3."""

try:
  import tensorflow as _tensorflow  # noqa: F401  # pylint: disable=unused-import
except ModuleNotFoundError as e:
  if e.name != "tensorflow":  # TensorFlow is there but broken: its own error says more
    raise
  # One line that says what to do, rather than a "No module named" from deep in a submodule.
  raise ModuleNotFoundError(
    "l2l_tf needs TensorFlow 2.21, which is not installed in this Python environment: "
    "pip install 'tensorflow>=2.21,<2.22' (for NVIDIA GPUs: "
    "pip install 'tensorflow[and-cuda]>=2.21,<2.22').",
    name="tensorflow",
  ) from None

# The public API: the documented workflow needs nothing deeper than these names. Baseline update
# rules stay in l2l_tf.update_rules (l2l_tf.Adam would read as a Keras optimizer, and is not).
from l2l_tf import update_rules
from l2l_tf.cells import CoordinatewiseLSTM
from l2l_tf.cells import GlobalAveragingLSTM
from l2l_tf.cells import RNNprop
from l2l_tf.cells import LearnedOptimizerCell
from l2l_tf.cells import NTMBFGS
from l2l_tf.cells import NTMLBFGS
from l2l_tf.cells.coordinatewise_lstm import lstm_kernel
from l2l_tf.export import export_saved_model
from l2l_tf.keras_optimizer import LearnedOptimizer
from l2l_tf.learned_rule import LearnedUpdateRule
from l2l_tf.learned_rule import ParameterGroups
from l2l_tf.optimizer_format import load_rule as load_optimizer
from l2l_tf.optimizer_format import save_rule as save_optimizer
from l2l_tf.problems.base import Problem
from l2l_tf.problems.keras_model import KerasModelProblem
from l2l_tf.problems.mlp import MLPClassificationProblem
from l2l_tf.problems.quadratic import QuadraticProblem
from l2l_tf.training.meta_trainer import MetaTrainer
from l2l_tf.training.meta_trainer import MetaTrainingConfig

__version__ = "0.1.0"

__all__ = [
  "CoordinatewiseLSTM",
  "GlobalAveragingLSTM",
  "RNNprop",
  "KerasModelProblem",
  "LearnedOptimizer",
  "LearnedOptimizerCell",
  "LearnedUpdateRule",
  "MLPClassificationProblem",
  "MetaTrainer",
  "MetaTrainingConfig",
  "NTMBFGS",
  "NTMLBFGS",
  "ParameterGroups",
  "Problem",
  "QuadraticProblem",
  "export_saved_model",
  "load_optimizer",
  "lstm_kernel",
  "save_optimizer",
  "update_rules",
]
