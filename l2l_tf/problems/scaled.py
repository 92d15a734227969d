"""Random objective scaling (Lv et al., ICML 2017): a meta-training distribution over scales.

A learned optimizer that reads gradient magnitudes can lean on the scale of its training
problems (MNIST's gradients shrink in a typical way as training goes on) and then misjudge a
problem whose gradients are 10x larger or smaller. Training on c * f with c log-uniform in
[1 / max_scale, max_scale], drawn once per instance and trajectory, removes that crutch.
"""

import math

import tensorflow as tf

from l2l_tf.problems import base


class RandomlyScaledProblem(base.Problem):
  """`problem` with each instance's loss multiplied by a random constant per trajectory.

  Losses are the scaled ones (the optimizee's gradient must be that of the loss the optimizer
  sees). Meta-objectives that are invariant to a constant factor per instance (the mean log
  loss) are unaffected by the scale; the sum of losses would weigh instances by it.

  Args:
    problem: the Problem to wrap (its batch_size, dtype and parameters are kept).
    max_scale: c = exp(u), u ~ U(-log max_scale, log max_scale); 1 disables scaling.
  """

  def __init__(self, problem, max_scale):
    super().__init__(batch_size=problem.batch_size, dtype=problem.dtype)
    if not (math.isfinite(max_scale) and max_scale >= 1):
      raise ValueError(f"random scale must be a finite number >= 1, got {max_scale}")
    self.problem = problem
    self.max_scale = float(max_scale)
    self.name = problem.name

  def with_batch_size(self, batch_size):
    share = super().with_batch_size(batch_size)
    share.problem = self.problem.with_batch_size(batch_size)
    return share

  def init_params(self, seed):
    return self.problem.init_params(seed)

  def sample_batches(self, seed, num_steps):
    bound = math.log(self.max_scale)
    log_scale = tf.random.stateless_uniform(
      [self.batch_size], base.stateless_seed(seed, 2000), -bound, bound, dtype=self.dtype
    )
    return {
      "data": self.problem.sample_batches(seed, num_steps),
      "log_scale": tf.broadcast_to(log_scale, [num_steps + 1, self.batch_size]),
    }

  def loss(self, params, batch):
    return self.problem.loss(params, batch["data"]) * tf.exp(batch["log_scale"])

  def get_config(self):
    return dict(self.problem.get_config(), random_scale=self.max_scale)
