"""Gradient preprocessing: what a learned optimizer sees of each gradient coordinate.

Every preprocessor maps gradients of shape [..., 1] to features of shape [..., num_features].
Preprocessors are small value objects with get_config so that a cell's configuration (and an
exported SavedModel's asset) records exactly which one was used.
"""

import abc
import math
from typing import Any, Dict

import tensorflow as tf

from l2l_tf import registry


class Preprocessor(abc.ABC):
  """Base class: maps raw gradients [..., 1] to input features [..., num_features].

  A subclass sets `name` (its registered name) and `num_features`, overrides __call__, and
  extends get_config with its constructor's arguments (get_preprocessor rebuilds it from them).
  """

  name: str = None
  num_features: int = 1

  @abc.abstractmethod
  def __call__(self, gradients: tf.Tensor) -> tf.Tensor:
    """Features [..., num_features] of gradients [..., 1] (in the gradients' dtype)."""

  def get_config(self) -> Dict[str, Any]:
    return {"name": self.name}


@registry.PREPROCESSORS.register()
class IdentityPreprocessor(Preprocessor):
  """Feeds the gradient unchanged (the paper's quadratic experiment)."""

  name = "identity"

  def __call__(self, gradients):
    return gradients


@registry.PREPROCESSORS.register()
class ScalePreprocessor(Preprocessor):
  """Multiplies the gradient by a constant."""

  name = "scale"

  def __init__(self, scale=1.0):
    if not math.isfinite(scale) or scale == 0:
      raise ValueError(f"scale must be finite and non-zero, got {scale}")
    self.scale = float(scale)

  def __call__(self, gradients):
    # tf.constant, not tf.cast: a Python float would be rounded to float32 first.
    return gradients * tf.constant(self.scale, gradients.dtype)

  def get_config(self):
    return {"name": self.name, "scale": self.scale}


@registry.PREPROCESSORS.register()
class LogSignPreprocessor(Preprocessor):
  """The paper's Appendix A preprocessing with parameter p (two features per coordinate).

      |g| >= exp(-p):  (log|g| / p, sign(g))
      otherwise:       (-1, exp(p) * g)

  Gradients span many orders of magnitude; the log channel makes their scale visible to the
  network while the sign (or the rescaled tiny value) keeps their direction.
  """

  name = "log_sign"
  num_features = 2

  def __init__(self, p=10.0):
    if not (math.isfinite(p) and p > 0):
      raise ValueError(f"log_sign preprocessing needs p > 0, got {p}")
    self.p = float(p)

  def __call__(self, gradients):
    dtype = gradients.dtype
    p = tf.constant(self.p, dtype)  # not tf.cast: a Python float would be rounded to float32
    magnitude = tf.abs(gradients)
    large = magnitude >= tf.exp(-p)
    # log of a clamped value: the other branch is selected for tiny gradients, and the clamp
    # keeps log(0) = -inf (and its NaN derivative) out of the graph.
    safe_log = tf.math.log(tf.maximum(magnitude, tf.exp(-p))) / p
    first = tf.where(large, safe_log, -tf.ones_like(gradients))
    second = tf.where(large, tf.sign(gradients), tf.exp(p) * gradients)
    return tf.concat([first, second], axis=-1)

  def get_config(self):
    return {"name": self.name, "p": self.p}


def get_preprocessor(identifier):
  """Builds a preprocessor from a name, a config dict or an instance."""
  if isinstance(identifier, Preprocessor):
    return identifier
  if isinstance(identifier, str):
    identifier = {"name": identifier}
  if not isinstance(identifier, dict) or identifier.get("name") not in registry.PREPROCESSORS:
    raise ValueError(
      f"Unknown preprocessing {identifier!r}; choose one of {sorted(registry.PREPROCESSORS)}"
    )
  config = dict(identifier)
  return registry.PREPROCESSORS.get(config.pop("name"))(**config)
