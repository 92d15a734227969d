"""The optimizee protocol: a family of problems as pure functions of their parameters.

A Problem describes a family; a seed picks one member. Parameters are a dict of tensors, each
with a leading axis of `batch_size` independent instances, so B problems step together in one
graph (the quadratic batch of the paper; 20 MNIST runs of an evaluation). Nothing is a
variable: learned optimizers rebuild the optimizee from parameter tensors at every step.
"""

from __future__ import annotations

import abc
import copy
from typing import Any

import numpy as np
import tensorflow as tf

Params = dict[str, tf.Tensor]
# A problem seed: a Python int, or a scalar integer tensor inside a traced graph.
Seed = int | tf.Tensor
# What tf.as_dtype accepts: "float32", tf.float32, np.float32, ...
DTypeLike = str | tf.dtypes.DType | np.dtype | type[np.generic]
# Data handed to a problem: numpy arrays or tensors.
ArrayLike = np.ndarray | tf.Tensor


def stateless_seed(seed, stream):
  """A stateless-RNG seed pair: `stream` separates draws that share a problem seed."""
  return tf.stack([tf.cast(seed, tf.int64), tf.constant(stream, tf.int64)])


def minibatch_indices(seed, num_steps, batch_size, minibatch_size, num_examples):
  """Pre-sampled minibatch indices [num_steps + 1, batch_size, minibatch_size].

  Problems on a fixed dataset gather their minibatches from these inside the graph, so a whole
  unroll's data is ready before it starts.
  """
  return tf.random.stateless_uniform(
    [num_steps + 1, batch_size, minibatch_size],
    stateless_seed(seed, 1000),
    maxval=num_examples,
    dtype=tf.int32,
  )


class Problem(abc.ABC):
  """Base class of optimizee families.

  A subclass overrides:
    init_params(seed) -> {name: [batch_size, ...]} initial parameters theta_0.
    sample_batches(seed, num_steps) -> nested tensors with a leading axis of num_steps + 1:
        the data of step t (t = 0 is used for the gradient at theta_0).
    loss(params, batch) -> [batch_size] loss of each instance on one step's batch.
  It may extend get_config (add its own arguments to the base's) and set `name`. All three
  must be pure functions of their inputs (stateless RNG from `seed`): the unroll traces them.
  """

  name: str = None

  def __init__(self, batch_size: int = 1, dtype: DTypeLike = "float32") -> None:
    if int(batch_size) <= 0:
      raise ValueError(f"batch_size must be positive, got {batch_size}")
    self.batch_size = int(batch_size)
    self.dtype = tf.as_dtype(dtype)

  @abc.abstractmethod
  def init_params(self, seed: Seed) -> Params:
    """Initial parameters of the `batch_size` instances that `seed` picks."""

  @abc.abstractmethod
  def sample_batches(self, seed: Seed, num_steps: int) -> Any:
    """The data of steps 0..num_steps (leading axis num_steps + 1) for the same seed."""

  @abc.abstractmethod
  def loss(self, params: Params, batch: Any) -> tf.Tensor:
    """[batch_size] losses of every instance on one step's batch."""

  def with_batch_size(self, batch_size: int) -> Problem:
    """This family stepping `batch_size` instances at a time (a replica's share of a meta-batch).

    Shares everything else (data, networks); the losses of its instances are those of the same
    instances in this family.
    """
    share = copy.copy(self)
    share.batch_size = int(batch_size)
    return share

  def num_coordinates(self) -> int:
    """Coordinates of one instance (what a learned optimizer steps)."""
    params = self.init_params(0)
    return sum(int(p.shape[1:].num_elements()) for p in params.values())

  def get_config(self) -> dict[str, Any]:
    return {"name": self.name, "batch_size": self.batch_size, "dtype": self.dtype.name}


class DatasetClassificationProblem(Problem):
  """Softmax cross-entropy of a classifier on minibatches drawn from a fixed labelled dataset.

  A subclass calls set_dataset(images, labels) in its constructor, sets minibatch_size, and
  overrides init_params and logits(params, x) ([batch_size, M, ...] examples -> [batch_size, M,
  classes]). Minibatches are drawn independently for every instance and step.
  """

  images: tf.Tensor
  labels: tf.Tensor
  minibatch_size: int

  def set_dataset(self, images: ArrayLike, labels: ArrayLike) -> None:
    """Stores the dataset (images in the problem's dtype, labels int32)."""
    # Kept as tensors: a tf.function captures them by reference, and minibatches are gathered
    # from pre-sampled indices, so a whole unroll's data is ready before it starts.
    self.images = tf.convert_to_tensor(images, self.dtype)
    self.labels = tf.convert_to_tensor(labels, tf.int32)

  @abc.abstractmethod
  def logits(self, params: Params, x: tf.Tensor) -> tf.Tensor:
    """x: [batch_size, M, ...] examples -> logits [batch_size, M, classes]."""

  def sample_batches(self, seed: Seed, num_steps: int) -> dict[str, tf.Tensor]:
    return {
      "indices": minibatch_indices(
        seed, num_steps, self.batch_size, self.minibatch_size, self.images.shape[0]
      )
    }

  def loss(self, params: Params, batch: dict[str, tf.Tensor]) -> tf.Tensor:
    x = tf.gather(self.images, batch["indices"])
    y = tf.gather(self.labels, batch["indices"])
    xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=self.logits(params, x))
    return tf.reduce_mean(xent, axis=-1)
