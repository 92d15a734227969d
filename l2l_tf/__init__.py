"""l2l_tf: learned optimizers (Andrychowicz et al., 2016) for TensorFlow 2 and Keras 3."""
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
