"""Optimizee families. Importing the package registers every named problem (l2l_tf.registry)."""
from l2l_tf.problems import convnet  # pylint: disable=unused-import
from l2l_tf.problems import mlp  # pylint: disable=unused-import
from l2l_tf.problems import neural_art  # pylint: disable=unused-import
from l2l_tf.problems import quadratic  # pylint: disable=unused-import
