"""Dataset loaders: MNIST (embedded sample, IDX files, tfds) and CIFAR-10 (binary, tfds)."""

from l2l_tf.data.cifar import load_cifar10, read_cifar10_binary
from l2l_tf.data.errors import DataError
from l2l_tf.data.mnist import load_mnist, load_problem_split, read_idx, split_train_validation

__all__ = [
  "DataError",
  "load_cifar10",
  "load_mnist",
  "load_problem_split",
  "read_cifar10_binary",
  "read_idx",
  "split_train_validation",
]
