"""The optimizee protocol: a family of problems as pure functions of their parameters.

A Problem describes a family; a seed picks one member. Parameters are a dict of tensors, each
with a leading axis of `batch_size` independent instances, so B problems step together in one
graph (the quadratic batch of the paper; 20 MNIST runs of an evaluation). Nothing is a
variable: learned optimizers rebuild the optimizee from parameter tensors at every step.
"""
import copy

import tensorflow as tf


def stateless_seed(seed, stream):
  """A stateless-RNG seed pair: `stream` separates draws that share a problem seed."""
  return tf.stack([tf.cast(seed, tf.int64), tf.constant(stream, tf.int64)])


def minibatch_indices(seed, num_steps, batch_size, minibatch_size, num_examples):
  """Pre-sampled minibatch indices [num_steps + 1, batch_size, minibatch_size].

  Problems on a fixed dataset gather their minibatches from these inside the graph, so a whole
  unroll's data is ready before it starts.
  """
  return tf.random.stateless_uniform([num_steps + 1, batch_size, minibatch_size],
                                     stateless_seed(seed, 1000), maxval=num_examples,
                                     dtype=tf.int32)


class Problem:
  """Base class of optimizee families.

  Subclasses define:
    init_params(seed) -> {name: [batch_size, ...]} initial parameters theta_0.
    sample_batches(seed, num_steps) -> nested tensors with a leading axis of num_steps + 1:
        the data of step t (t = 0 is used for the gradient at theta_0).
    loss(params, batch) -> [batch_size] loss of each instance on one step's batch.
  """

  name = None

  def __init__(self, batch_size=1, dtype="float32"):
    if int(batch_size) <= 0:
      raise ValueError(f"batch_size must be positive, got {batch_size}")
    self.batch_size = int(batch_size)
    self.dtype = tf.as_dtype(dtype)

  def init_params(self, seed):
    raise NotImplementedError

  def sample_batches(self, seed, num_steps):
    raise NotImplementedError

  def loss(self, params, batch):
    raise NotImplementedError

  def with_batch_size(self, batch_size):
    """This family stepping `batch_size` instances at a time (a replica's share of a meta-batch).

    Shares everything else (data, networks); the losses of its instances are those of the same
    instances in this family.
    """
    share = copy.copy(self)
    share.batch_size = int(batch_size)
    return share

  def num_coordinates(self):
    """Coordinates of one instance (what a learned optimizer steps)."""
    params = self.init_params(0)
    return sum(int(p.shape[1:].num_elements()) for p in params.values())

  def get_config(self):
    return {"name": self.name, "batch_size": self.batch_size, "dtype": self.dtype.name}
