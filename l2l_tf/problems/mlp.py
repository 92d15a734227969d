"""MLP classifiers as optimizees: the paper's MNIST experiment and its generalisation variants."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from l2l_tf import data
from l2l_tf import registry
from l2l_tf.problems import base

ACTIVATIONS = {"sigmoid": tf.sigmoid, "relu": tf.nn.relu, "tanh": tf.tanh}


class MLPClassificationProblem(base.DatasetClassificationProblem):
  """Softmax cross-entropy of an MLP on minibatches drawn from a fixed dataset.

  The paper's MNIST optimizee: 784-20-10, sigmoid, minibatches of 128, parameters IID
  N(0, init_stddev^2). `batch_size` independent networks (each with its own minibatches) step
  together, as batched matmuls.

  Args:
    images: float [N, features]; labels: int [N] in [0, num_classes).
    hidden_sizes: width of each hidden layer.
    activation: "sigmoid", "relu" or "tanh".
  """

  name = "mnist"

  def __init__(
    self,
    images: base.ArrayLike,
    labels: base.ArrayLike,
    hidden_sizes: Sequence[int] = (20,),
    activation: str = "sigmoid",
    num_classes: int = 10,
    minibatch_size: int = 128,
    batch_size: int = 1,
    init_stddev: float = 0.01,
    dtype: base.DTypeLike = "float32",
  ) -> None:
    super().__init__(batch_size=batch_size, dtype=dtype)
    if activation not in ACTIVATIONS:
      raise ValueError(f"Unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    if not hidden_sizes or min(hidden_sizes) <= 0:
      raise ValueError(f"hidden_sizes must be positive integers, got {hidden_sizes}")
    self.set_dataset(images, labels)
    if self.images.shape.rank != 2 or self.images.shape[0] != self.labels.shape[0]:
      raise ValueError(
        f"images must be [N, features] and labels [N]; got {self.images.shape} "
        f"and {self.labels.shape}"
      )
    self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
    self.activation = activation
    self.num_classes = int(num_classes)
    self.minibatch_size = int(minibatch_size)
    self.init_stddev = float(init_stddev)
    self.layer_sizes = (self.images.shape[1],) + self.hidden_sizes + (self.num_classes,)

  def init_params(self, seed: base.Seed) -> base.Params:
    params = {}
    for layer, (fan_in, fan_out) in enumerate(zip(self.layer_sizes[:-1], self.layer_sizes[1:])):
      for kind, shape in (("w", [fan_in, fan_out]), ("b", [fan_out])):
        params[f"layer_{layer}/{kind}"] = tf.random.stateless_normal(
          [self.batch_size] + shape,
          base.stateless_seed(seed, 2 * layer + (kind == "b")),
          stddev=self.init_stddev,
          dtype=self.dtype,
        )
    return params

  def logits(self, params: base.Params, x: tf.Tensor) -> tf.Tensor:
    """x: [batch_size, M, features] -> logits [batch_size, M, classes]."""
    activation = ACTIVATIONS[self.activation]
    num_layers = len(self.layer_sizes) - 1
    for layer in range(num_layers):
      x = tf.matmul(x, params[f"layer_{layer}/w"]) + params[f"layer_{layer}/b"][:, None, :]
      if layer < num_layers - 1:
        x = activation(x)
    return x

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update(
      hidden_sizes=list(self.hidden_sizes),
      activation=self.activation,
      num_classes=self.num_classes,
      minibatch_size=self.minibatch_size,
      init_stddev=self.init_stddev,
    )
    return config


def load_mnist_split(split, options):
  """MNIST (images [N, 784], labels [N]) of a problem split, from options.dataset_source.

  train and validation split MNIST's training set 90% / 10% (by options.seed); test is its
  test set.
  """
  load = lambda data_split: data.load_mnist(options.dataset_source, data_split, options.data_dir)
  return data.load_problem_split(load, split, options.seed)


@registry.PROBLEMS.register("mnist")
def make_mnist_problem(split, batch_size, options):
  """The paper's MNIST MLP (options: dataset_source, data_dir, hidden_sizes, activation, seed).

  train and validation split MNIST's training set 90% / 10% (by `seed`); test is its test set.
  """
  images, labels = load_mnist_split(split, options)
  return MLPClassificationProblem(
    images,
    labels,
    hidden_sizes=tuple(options.hidden_sizes),
    activation=options.activation,
    batch_size=batch_size or 1,
  )
