"""l2l_tf: learned optimizers (Andrychowicz et al., 2016) for TensorFlow 2 and Keras 3."""
try:
  import tensorflow as _tensorflow  # pylint: disable=unused-import
except ModuleNotFoundError as e:
  if e.name != "tensorflow":  # TensorFlow is there but broken: its own error says more
    raise
  # One line that says what to do, rather than a "No module named" from deep in a submodule.
  raise ModuleNotFoundError(
      "l2l_tf needs TensorFlow 2.21, which is not installed in this Python environment: "
      "pip install 'tensorflow>=2.21,<2.22' (for NVIDIA GPUs: "
      "pip install 'tensorflow[and-cuda]>=2.21,<2.22').", name="tensorflow") from None

from l2l_tf.cells import CoordinatewiseLSTM
from l2l_tf.cells import LearnedOptimizerCell
from l2l_tf.export import export_saved_model
from l2l_tf.keras_optimizer import LearnedOptimizer
from l2l_tf.learned_rule import LearnedUpdateRule
from l2l_tf.learned_rule import ParameterGroups
from l2l_tf.problems.mlp import MLPClassificationProblem
from l2l_tf.problems.quadratic import QuadraticProblem
from l2l_tf.update_rules import NAG
from l2l_tf.update_rules import SGD
from l2l_tf.update_rules import Adam
from l2l_tf.update_rules import RMSprop

__version__ = "0.1.0"
