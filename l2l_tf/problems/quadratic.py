"""The paper's quadratic family: f(theta) = ||W theta - y||^2 with Gaussian W and y."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from l2l_tf import registry
from l2l_tf.problems import base


class QuadraticProblem(base.Problem):
  """Batches of independent quadratics f(theta) = ||W theta - y||^2, W [d, d] and y [d] IID N(0,1).

  Args:
    dim: d (paper: 10).
    batch_size: independent instances stepped together (paper's training batch: 128).
    init_stddev: theta_0 ~ N(0, init_stddev^2).
  """

  name = "quadratic"

  def __init__(
    self,
    dim: int = 10,
    batch_size: int = 128,
    init_stddev: float = 0.01,
    dtype: base.DTypeLike = "float32",
  ) -> None:
    super().__init__(batch_size=batch_size, dtype=dtype)
    if int(dim) <= 0:
      raise ValueError(f"dim must be positive, got {dim}")
    self.dim = int(dim)
    self.init_stddev = float(init_stddev)

  def init_params(self, seed: base.Seed) -> base.Params:
    theta = tf.random.stateless_normal(
      [self.batch_size, self.dim],
      base.stateless_seed(seed, 0),
      stddev=self.init_stddev,
      dtype=self.dtype,
    )
    return {"theta": theta}

  def sample_batches(self, seed: base.Seed, num_steps: int) -> dict[str, tf.Tensor]:
    # One fixed function per trajectory: every step sees the same W and y.
    w = tf.random.stateless_normal(
      [self.batch_size, self.dim, self.dim], base.stateless_seed(seed, 1), dtype=self.dtype
    )
    y = tf.random.stateless_normal(
      [self.batch_size, self.dim], base.stateless_seed(seed, 2), dtype=self.dtype
    )
    steps = num_steps + 1
    return {
      "w": tf.broadcast_to(w, [steps] + w.shape.as_list()),
      "y": tf.broadcast_to(y, [steps] + y.shape.as_list()),
    }

  def loss(self, params: base.Params, batch: dict[str, tf.Tensor]) -> tf.Tensor:
    residual = tf.linalg.matvec(batch["w"], params["theta"]) - batch["y"]
    return tf.reduce_sum(tf.square(residual), axis=-1)

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update(dim=self.dim, init_stddev=self.init_stddev)
    return config


# The paper's quadratic experiment feeds raw gradients and takes the network's output as is.
# Instances per meta-batch when the caller gives none (other problems: 1).
DEFAULT_BATCH_SIZE = 128


@registry.PROBLEMS.register(
  "quadratic",
  cell_settings={"preprocessing": "identity", "output_scale": 1.0},
  default_batch_size=DEFAULT_BATCH_SIZE,
)
def make_quadratic_problem(split, batch_size, options):
  """The paper's 10-dimensional quadratics; splits differ only by the seeds drawn."""
  del split, options  # no data
  return QuadraticProblem(batch_size=batch_size or DEFAULT_BATCH_SIZE)
