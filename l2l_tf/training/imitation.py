"""Imitation of a hand-designed optimizer: a warm start for meta-training.

Chen et al., "Training Stronger Baselines for Learning to Optimize" (NeurIPS 2020), start
meta-training from a learned optimizer that already imitates a tuned baseline (the teacher).
Here the teacher drives each trajectory; the learned rule is fed the same gradients, its state
carried along, and one Adam step per window of unroll_length steps lowers the mean squared
difference between its update and the teacher's (per coordinate, averaged over the window's
steps, the instances and the coordinates). Windows are cut like truncated BPTT: the learned
rule's state is carried into the next window without its gradient.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from l2l_tf import registry
from l2l_tf import update_rules
from l2l_tf.problems import base as problems_base
from l2l_tf.training import unroll as unroll_lib


def parse_teacher(spec: str) -> tuple[str, float]:
  """'adam:0.03' -> ('adam', 0.03), with a one-line ValueError for anything else."""
  name, _, rate = spec.partition(":")
  try:
    learning_rate = float(rate)
  except ValueError:
    learning_rate = math.nan
  if not (math.isfinite(learning_rate) and learning_rate > 0):
    raise ValueError(
      f"imitate takes NAME:LEARNING_RATE with a positive rate, e.g. adam:0.03; got {spec!r}"
    )
  registry.BASELINES.get(name)  # an unknown name: ValueError listing the baselines
  return name, learning_rate


def make_teacher(spec: str) -> update_rules.UpdateRule:
  """The baseline a NAME:LEARNING_RATE spec names."""
  return update_rules.make_baseline(*parse_teacher(spec))


def _squared_difference(learned, taught):
  """Sum over every coordinate of (learned - taught)^2, and the count. Both rules stepped from
  the same parameters, so their new parameters differ exactly as their updates do."""
  total, count = 0.0, 0
  for name, p in learned.items():
    total += tf.reduce_sum(tf.square(p - taught[name]))
    count += tf.size(p)
  return total, count


class Imitation:
  """Trains a learned rule's weights to reproduce a teacher's updates (in place).

  Args:
    rule: the LearnedUpdateRule whose weights are trained.
    teacher: the UpdateRule to imitate (e.g. make_teacher("adam:0.03")).
    learning_rate: Adam's learning rate on the rule's weights.
    gradient_clip: global-norm clip of the gradients (0: off).
    log: called with each progress line.
  """

  def __init__(
    self,
    rule: update_rules.UpdateRule,
    teacher: update_rules.UpdateRule,
    learning_rate: float,
    gradient_clip: float,
    log: Callable[[str], object] = print,
  ) -> None:
    self.rule = rule
    self.teacher = teacher
    self.gradient_clip = gradient_clip
    self.log = log
    # Its own Adam: meta-training starts with fresh moments, as from any other initial weights.
    self.optimizer = keras.optimizers.Adam(learning_rate)
    self.optimizer.build(rule.trainable_variables)
    self._windows = {}  # one traced graph per problem family

  def _window(self, problem, params, teacher_state, rule_state, batches):
    """One window of the teacher's steps and the imitation loss's gradient.

    Returns (imitation loss, detached end states, clipped gradients, whether all are finite).
    """
    steps = tf.nest.flatten(batches)[0].shape[0]
    variables = self.rule.trainable_variables
    with tf.GradientTape() as tape:
      total, count = 0.0, 0
      for t in range(steps):  # windows are short; a Python loop keeps the states' structures
        batch = tf.nest.map_structure(lambda x, t=t: x[t], batches)
        _, grads = unroll_lib.value_and_grad(problem, params, batch)
        taught, teacher_state = self.teacher.step(params, grads, teacher_state)
        learned, rule_state = self.rule.step(params, grads, rule_state)
        squares, size = _squared_difference(learned, taught)
        total, count = total + squares, count + size
        params = taught  # the teacher drives the trajectory
      loss = total / tf.cast(count, total.dtype)
    gradients = tape.gradient(loss, variables)
    gradients = [tf.zeros_like(v) if g is None else g for g, v in zip(gradients, variables)]
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients])
    finite = tf.logical_and(finite, tf.math.is_finite(loss))
    if self.gradient_clip:
      gradients, _ = tf.clip_by_global_norm(gradients, self.gradient_clip)
    detached = tf.nest.map_structure(tf.stop_gradient, (params, teacher_state, rule_state))
    return loss, detached, gradients, finite

  def trajectory(
    self, problem: problems_base.Problem, seed: int, num_steps: int, unroll_length: int
  ) -> float:
    """Imitates the teacher along one trajectory; returns the mean imitation loss."""
    if id(problem) not in self._windows:
      self._windows[id(problem)] = tf.function(lambda *args: self._window(problem, *args))
    window = self._windows[id(problem)]
    params = problem.init_params(seed)
    batches = problem.sample_batches(seed, num_steps)
    teacher_state, rule_state = self.teacher.init_state(params), self.rule.init_state(params)
    losses = []
    for start in range(0, num_steps, unroll_length):
      steps = tf.nest.map_structure(lambda x, s=start: x[s : s + unroll_length], batches)
      loss, states, gradients, finite = window(params, teacher_state, rule_state, steps)
      if not bool(finite):  # as meta-training does: skip the step, abandon the trajectory
        self.log(f"non-finite imitation loss or gradient (trajectory seed {seed}): skipped")
        break
      self.optimizer.apply_gradients(zip(gradients, self.rule.trainable_variables))
      params, teacher_state, rule_state = states
      losses.append(float(loss))
    return float(np.mean(losses)) if losses else math.nan

  def run(
    self,
    problems: list[problems_base.Problem],
    seeds: list[int],
    num_steps: int,
    unroll_length: int,
    log_every: int,
  ) -> list[float]:
    """One trajectory per seed (family drawn from the seed, as in training); mean losses."""
    start, losses = time.time(), []
    for index, seed in enumerate(seeds):
      losses.append(self.trajectory(problems[seed % len(problems)], seed, num_steps, unroll_length))
      done = index + 1
      if done % log_every == 0 or done == len(seeds):
        pace = (time.time() - start) / done
        self.log(
          f"imitation of {self.teacher.name} trajectory {done}/{len(seeds)} imitation loss "
          f"{np.mean(losses[-log_every:]):.4g} {pace:.2f}s/trajectory "
          f"ETA {pace * (len(seeds) - done):.0f}s"
        )
    return losses
