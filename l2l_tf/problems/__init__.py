"""Optimizee families. Importing the package registers every named problem (l2l_tf.registry)."""

from l2l_tf.problems import convnet  # noqa: F401  # pylint: disable=unused-import
from l2l_tf.problems import mlp  # noqa: F401  # pylint: disable=unused-import
from l2l_tf.problems import neural_art  # noqa: F401  # pylint: disable=unused-import
from l2l_tf.problems import quadratic  # noqa: F401  # pylint: disable=unused-import
