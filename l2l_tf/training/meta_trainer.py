"""Meta-training by truncated backpropagation through time (the paper's Section 3).

Each trajectory samples a new problem (new theta_0, new data) and zero optimizer state, runs
num_steps optimizee steps cut into unrolls of unroll_length, and after each unroll takes one
Adam step on the optimizer's weights; theta and the optimizer state carry over detached.
After every epoch the optimizer is evaluated on fixed validation problems and the best one is
kept (early stopping as in the paper).

Output directory layout:
  run.json           the run's configuration (a directory holding another run is refused)
  best/              the best optimizer so far (l2l_tf.optimizer_format), replaced atomically; until
                     an epoch improves on it, the untrained optimizer (metadata "untrained": true)
  checkpoints/       tf.train checkpoints: weights, meta-optimizer state, epoch, best score and
                     the history up to that epoch (so the two are one atomic write)
  history.json       per-epoch meta-loss, validation loss, time (a copy of the checkpoint's)
  tensorboard/       summaries (rewritten from the checkpoint's history at every start)
  .lock              held (fcntl.flock) by the process training into the directory

A kill at any point loses at most the epoch in progress: rerunning the same command resumes
from the last checkpoint, removes the killed run's temporaries and rebuilds history.json and
TensorBoard from the checkpoint, so no epoch is missing or duplicated (see run_directory).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from l2l_tf import atomic_files
from l2l_tf import evaluation
from l2l_tf import learned_rule
from l2l_tf import optimizer_format
from l2l_tf.problems import base as problems_base
from l2l_tf.problems import scaled
from l2l_tf.training import distribute
from l2l_tf.training import fault_injection
from l2l_tf.training import imitation
from l2l_tf.training import run_directory
from l2l_tf.training import unroll as unroll_lib

RunDirectoryError = run_directory.RunDirectoryError


class TrainingDivergedError(ValueError):
  """Too many meta-updates in a row were skipped as non-finite: training cannot go on.

  A ValueError, so that the command-line scripts report it as one `error:` line. The run
  directory keeps its last checkpoint and best/.
  """


META_OBJECTIVES = ("loss", "log_loss")
VALIDATION_METRICS = ("mean", "final")
# Keeps log f finite when an instance is solved exactly (quadratics can reach 0).
_LOG_FLOOR = 1e-12


@dataclasses.dataclass
class MetaTrainingConfig:
  """Meta-training settings (defaults: the paper's quadratic/MNIST setup, scaled to a CPU).

  Attributes:
    num_steps: optimizee steps per trajectory (T).
    unroll_length: steps per truncation; num_steps must be a multiple of it.
    epochs: evaluation periods; each runs trajectories_per_epoch trajectories.
    meta_learning_rate: Adam's learning rate on the optimizer's weights.
    meta_gradient_clip: global-norm clip of the meta-gradient (0 disables).
    second_derivatives: keep the gradient's dependence on theta (the paper drops it).
    num_validation_problems: problems of the fixed validation set (its problem's batch).
    seed: base seed; trajectory i of epoch e uses a seed derived from (seed, e, i).
    jit_compile: "auto" (XLA on GPU/TPU, plain graphs on CPU, where they measured faster),
      "true" or "false".
    log_every: trajectories between progress lines.
    meta_objective: "loss" (the paper: sum over the unroll's steps of the mean loss) or
      "log_loss" (mean of log f over steps and instances). The log weighs a halving of the
      loss equally early and late in training, where "loss" is dominated by the first steps;
      it suits problems whose loss falls by orders of magnitude (MNIST memorisation).
    validation_metric: what early stopping minimises on the validation problems: "mean" (mean
      loss over all steps, the paper's meta-objective) or "final" (mean loss over the last
      unroll_length steps: the optimizer that ends lowest).
    curriculum: stages of (num_steps, unroll_length) for training trajectories (curricula over
      horizons and truncations, Chen et al., NeurIPS 2020), e.g. ((100, 20), (100, 100)):
      the epochs are split into len(curriculum) equal stages (repeat a stage to lengthen it)
      and stage k trains on trajectories of curriculum[k][0] steps, cut into unrolls of
      curriculum[k][1]. Empty: (num_steps, unroll_length) throughout. Validation always runs
      num_steps steps, so early stopping compares like with like.
    random_scale: objective scaling (Lv et al., ICML 2017): each training instance's loss is
      multiplied by c, log-uniform in [1 / random_scale, random_scale] per trajectory; 1 is off.
      Needs the scale-invariant meta_objective "log_loss".
    validation_window: steps at the end of the validation trajectories that the "final"
      metric averages; 0 means unroll_length (set it when unrolls are long, e.g. untruncated).
    max_consecutive_skips: stop with TrainingDivergedError once this many meta-updates in a
      row were skipped for a non-finite meta-loss or meta-gradient (0: never stop).
    recompute: what the meta-gradient's backward pass recomputes instead of storing
      (unroll.RECOMPUTE_MODES): "none" (fastest), "steps" (keeps one trajectory per step) or
      "blocks" (one per block of about sqrt(unroll_length) steps). Same meta-gradient, less
      memory for large optimizees, about one more forward pass of time.
    imitate: "NAME:LEARNING_RATE" of a registered baseline (e.g. "adam:0.03") that the learned
      rule imitates before meta-training (Chen et al., NeurIPS 2020; see imitation.py), once,
      when the run starts without a checkpoint. "": no imitation.
    imitation_trajectories: trajectories (num_steps steps, cut into unroll_length windows) of
      imitation; 0 with imitate "" is off.
  """

  num_steps: int = 100
  unroll_length: int = 20
  epochs: int = 10
  trajectories_per_epoch: int = 50
  meta_learning_rate: float = 0.003
  meta_gradient_clip: float = 1.0
  second_derivatives: bool = False
  seed: int = 0
  jit_compile: str = "auto"
  log_every: int = 25
  meta_objective: str = "loss"
  validation_metric: str = "mean"
  curriculum: tuple = ()
  random_scale: float = 1.0
  validation_window: int = 0
  max_consecutive_skips: int = 10
  recompute: str = "none"
  imitate: str = ""
  imitation_trajectories: int = 0

  def final_window(self) -> int:
    """Steps that the "final" validation metric averages (default: one unroll)."""
    return int(self.validation_window) or self.unroll_length

  def stage(self, epoch: int) -> tuple[int, int]:
    """(num_steps, unroll_length) of the training trajectories of 0-based `epoch`."""
    stages = tuple(self.curriculum)
    if not stages:
      return self.num_steps, self.unroll_length
    num_steps, unroll_length = stages[min(epoch * len(stages) // self.epochs, len(stages) - 1)]
    return int(num_steps), int(unroll_length)

  def validate(self) -> None:
    """Raises ValueError with a one-line message for inconsistent settings."""
    self._validate_imitation()
    for name in ("num_steps", "unroll_length", "epochs", "trajectories_per_epoch", "log_every"):
      if int(getattr(self, name)) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
    if self.num_steps % self.unroll_length:
      raise ValueError(
        f"num_steps ({self.num_steps}) must be a multiple of unroll_length ({self.unroll_length})"
      )
    if not (math.isfinite(self.meta_learning_rate) and self.meta_learning_rate > 0):
      raise ValueError(f"meta_learning_rate must be positive, got {self.meta_learning_rate}")
    if self.meta_gradient_clip < 0:
      raise ValueError(f"meta_gradient_clip must be >= 0, got {self.meta_gradient_clip}")
    resolve_jit_compile(self.jit_compile)
    if self.meta_objective not in META_OBJECTIVES:
      raise ValueError(
        f"meta_objective must be one of {', '.join(META_OBJECTIVES)}, got {self.meta_objective!r}"
      )
    for stage in tuple(self.curriculum):
      if len(stage) != 2 or any(int(x) != x or x <= 0 for x in stage) or stage[0] % stage[1]:
        raise ValueError(
          "curriculum stages are (num_steps, unroll_length) with num_steps a "
          f"positive multiple of unroll_length, got {list(self.curriculum)}"
        )
    if not 0 <= int(self.validation_window) <= self.num_steps:
      raise ValueError(f"validation_window must be in [0, num_steps], got {self.validation_window}")
    if not (math.isfinite(self.random_scale) and self.random_scale >= 1):
      raise ValueError(f"random_scale must be a finite number >= 1, got {self.random_scale}")
    if self.random_scale > 1 and self.meta_objective != "log_loss":
      raise ValueError(
        "random_scale needs meta_objective log_loss (the sum of losses would "
        "weigh instances by their random scale)"
      )
    if self.validation_metric not in VALIDATION_METRICS:
      raise ValueError(
        f"validation_metric must be one of {', '.join(VALIDATION_METRICS)}, got "
        f"{self.validation_metric!r}"
      )
    if self.recompute not in unroll_lib.RECOMPUTE_MODES:
      raise ValueError(
        f"recompute must be one of {', '.join(unroll_lib.RECOMPUTE_MODES)}, got {self.recompute!r}"
      )
    if (
      int(self.max_consecutive_skips) != self.max_consecutive_skips
      or self.max_consecutive_skips < 0
    ):
      raise ValueError(
        f"max_consecutive_skips must be an integer >= 0, got {self.max_consecutive_skips}"
      )

  def _validate_imitation(self) -> None:
    trajectories = self.imitation_trajectories
    if int(trajectories) != trajectories or trajectories < 0:
      raise ValueError(f"imitation_trajectories must be an integer >= 0, got {trajectories}")
    if bool(self.imitate) != bool(trajectories):
      raise ValueError("imitate and imitation_trajectories > 0 go together (one without the other)")
    if self.imitate:
      imitation.parse_teacher(self.imitate)


def resolve_jit_compile(setting: str | bool) -> bool:
  """'auto' -> XLA when a GPU or TPU is present (on CPU plain graphs measured faster)."""
  setting = str(setting).lower()
  if setting not in ("auto", "true", "false"):
    raise ValueError(f"jit_compile must be auto, true or false, got {setting!r}")
  if setting == "auto":
    return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))
  return setting == "true"


def trajectory_seed(seed: int, epoch: int, index: int) -> int:
  """Training seeds, disjoint from the small seeds used for validation and test problems."""
  return int((seed * 1_000_003 + epoch * 10_007 + index) % (2**31 - 1)) + 1_000_000


def _write_summaries(writer, record):
  """One epoch's TensorBoard scalars."""
  with writer.as_default(step=record["epoch"]):
    if record["meta_loss"] is not None:
      tf.summary.scalar("meta_loss", record["meta_loss"])
    tf.summary.scalar("validation_loss", record["validation_loss"])


@dataclasses.dataclass
class _Run:
  """One MetaTrainer.train call's handles on its output directory."""

  output_dir: str
  manager: tf.train.CheckpointManager = None
  writer: tf.summary.SummaryWriter = None
  history: list = dataclasses.field(default_factory=list)
  # Saved inside every checkpoint, so that a checkpoint and its history are one write.
  history_json: tf.Variable = dataclasses.field(
    default_factory=lambda: tf.Variable("[]", trainable=False)
  )
  # Meta-updates skipped in a row, across trajectories and epochs (also checkpointed).
  skip_streak: tf.Variable = dataclasses.field(
    default_factory=lambda: tf.Variable(0, dtype=tf.int64, trainable=False)
  )
  first_epoch: int = 0
  start_time: float = dataclasses.field(default_factory=time.time)

  def path(self, name):
    return os.path.join(self.output_dir, name)

  def eta_seconds(self, config, epoch, trajectories_done):
    """Seconds left at this call's pace, after trajectories_done trajectories of 0-based epoch."""
    per_epoch = config.trajectories_per_epoch
    done = (epoch - self.first_epoch) * per_epoch + trajectories_done
    left = (config.epochs - epoch) * per_epoch - trajectories_done
    return (time.time() - self.start_time) / done * left


def _newest_checkpoint(directory):
  """The prefix of the highest-numbered complete ckpt-N in `directory`, or None."""
  names = os.listdir(directory) if os.path.isdir(directory) else []
  numbers = []
  for name in names:
    match = re.fullmatch(r"ckpt-(\d+)\.index", name)
    if match and any(other.startswith(f"ckpt-{match.group(1)}.data-") for other in names):
      numbers.append(int(match.group(1)))
  return os.path.join(directory, f"ckpt-{max(numbers)}") if numbers else None


def load_checkpoint_rule(
  run_dir: str, checkpoint: str | None = None
) -> tuple[learned_rule.LearnedUpdateRule, dict[str, Any]]:
  """The optimizer of one of a run's checkpoints (default: the newest), with its metadata.

  best/ holds the epoch that validated best; this reads any other epoch, e.g. to evaluate it
  on problems the validation did not cover. The architecture comes from best/ (a run never
  changes it), the weights from the checkpoint; the metadata is best/'s with that epoch's
  number and validation loss. Raises OptimizerFileError (one line) for a path that is not a
  run directory with checkpoints, or a checkpoint of another architecture.
  """
  directory = os.path.join(run_dir, run_directory.CHECKPOINTS)
  best = os.path.join(run_dir, run_directory.BEST)
  prefix = checkpoint or tf.train.latest_checkpoint(directory) or _newest_checkpoint(directory)
  if not prefix or not os.path.isdir(best):
    raise optimizer_format.OptimizerFileError(
      f"{run_dir}: not a scripts/train.py output directory with best/ and checkpoints/"
    )
  rule, metadata = optimizer_format.load_rule(best)
  epoch = tf.Variable(0, dtype=tf.int64)
  try:
    tf.train.Checkpoint(cells=rule.cells, epoch=epoch).restore(
      prefix
    ).assert_existing_objects_matched().expect_partial()
  except (tf.errors.OpError, AssertionError, ValueError) as e:
    raise optimizer_format.OptimizerFileError(
      f"{prefix}: not a checkpoint of {best}'s optimizer ({optimizer_format.first_line(e)})"
    ) from e
  epoch = int(epoch.numpy())
  history = _read_history(run_dir)
  record = next((r for r in history if r.get("epoch") == epoch), {})
  metadata = dict(
    metadata,
    epoch=epoch,
    checkpoint=os.path.abspath(prefix),
    untrained=bool(metadata.get("untrained")) and epoch == 0,
  )
  metadata["validation_loss"] = record.get("validation_loss")
  metadata.pop("best_validation_loss", None)  # best/'s, not this epoch's
  return rule, metadata


def _read_history(run_dir):
  try:
    with open(os.path.join(run_dir, run_directory.HISTORY_FILE)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return []


# Settings that change how a run computes or reports, not what it computes: a run may resume
# with other values (e.g. --recompute=blocks after running out of memory).
RESUMABLE_SETTINGS = ("recompute", "log_every", "max_consecutive_skips")


def _identity(description):
  """A run description without its command line, which names paths (a moved run resumes),
  and without RESUMABLE_SETTINGS."""
  metadata = {k: v for k, v in description.get("metadata", {}).items() if k != "command"}
  config = {k: v for k, v in description.get("config", {}).items() if k not in RESUMABLE_SETTINGS}
  return dict(description, metadata=metadata, config=config)


# One training problem family, or a list or tuple of families to draw from.
TrainingProblems = (
  problems_base.Problem | list[problems_base.Problem] | tuple[problems_base.Problem, ...]
)


class MetaTrainer:
  """Meta-trains a LearnedUpdateRule on a problem family.

  Args:
    rule: the LearnedUpdateRule whose cells are trained (in place).
    problem: training problem family (its batch_size instances form one meta-batch), or a
      list or tuple of families (e.g. MLPs of several widths and activations): each
      trajectory then draws one of them, uniformly, from its seed.
    validation_problem: fixed validation problems (drawn with validation_seed).
    config: MetaTrainingConfig.
    validation_seed: seed of the validation problems.
    metadata: extra JSON-able facts stored with the best optimizer (problem config, ...).
    log: called with each progress line. The default prints and flushes it, so that a log file
      or pipe holds every line up to the moment a run is killed.
    strategy: a tf.distribute.Strategy for data-parallel meta-training (distribute.make_strategy),
      or None: one device. Each replica unrolls its share of every meta-batch (which must divide
      evenly), the meta-gradients are averaged over all instances, and one meta-update applies
      everywhere. The rule's variables must have been created under strategy.scope().
  """

  def __init__(
    self,
    rule: learned_rule.LearnedUpdateRule,
    problem: TrainingProblems,
    validation_problem: problems_base.Problem,
    config: MetaTrainingConfig,
    validation_seed: int = 1,
    metadata: Mapping[str, Any] | None = None,
    log: Callable[[str], object] = functools.partial(print, flush=True),
    strategy: tf.distribute.Strategy | None = None,
  ) -> None:
    config.validate()
    self.rule = rule
    families = list(problem) if isinstance(problem, (list, tuple)) else [problem]
    if not families:
      raise ValueError("MetaTrainer needs at least one training problem")
    if config.random_scale > 1:
      families = [scaled.RandomlyScaledProblem(p, config.random_scale) for p in families]
    self.strategy = strategy
    if strategy is not None and config.imitation_trajectories:
      raise ValueError("imitation runs on one device; drop the strategy or the imitation")
    self._check_replicas(rule, families)
    self.problems = families
    self.problem = families[0]
    self.validation_problem = validation_problem
    self.config = config
    self.validation_seed = validation_seed
    self.metadata = dict(metadata or {})
    self.log = log
    with self._scope():  # the optimizer's slots are mirrored like the weights they follow
      self.meta_optimizer = keras.optimizers.Adam(config.meta_learning_rate)
      self.meta_optimizer.build(rule.trainable_variables)
    self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    self.best_validation = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
    jit = resolve_jit_compile(config.jit_compile)
    # One pair of graphs per training family (their parameter shapes differ).
    if strategy is None:
      self._start = [
        tf.function(functools.partial(self._start_trajectory, p), jit_compile=jit) for p in families
      ]
      self._train_unroll = [
        tf.function(functools.partial(self._unroll_and_gradients, p), jit_compile=jit)
        for p in families
      ]
      self._apply_gradients = self._apply_meta_update
    else:
      shares = [p.with_batch_size(p.batch_size // self.num_replicas) for p in families]
      self._start = [self._replicated_start(p, jit) for p in shares]
      self._train_unroll = [self._replicated_unroll(p, jit) for p in shares]
      self._apply_gradients = tf.function(self._replicated_meta_update)

  @property
  def num_replicas(self) -> int:
    """Replicas that share each meta-batch (1 without a strategy)."""
    return distribute.num_replicas(self.strategy)

  def _scope(self):
    return self.strategy.scope() if self.strategy else contextlib.nullcontext()

  def _check_replicas(self, rule, families):
    """Refuses meta-batches that do not split evenly and rules built outside the strategy."""
    for family in families:
      distribute.check_meta_batch(family.batch_size, self.num_replicas)
    if self.strategy and not all(
      self.strategy.extended.variable_created_in_scope(v.value) for v in rule.trainable_variables
    ):
      raise ValueError("the learned rule's variables must be created under strategy.scope()")

  # --- graph pieces -------------------------------------------------------------------------

  def _start_trajectory(self, problem, params, first_batch):
    return unroll_lib.start_trajectory(
      problem, self.rule, params, first_batch, self.config.second_derivatives
    )

  def _unroll_and_gradients(self, problem, trajectory, batches):
    """One device: the unroll's objective, trajectory, clipped meta-gradients and finiteness."""
    objective, trajectory, grads = self._objective_and_gradients(problem, trajectory, batches)
    grads, finite = self._checked_and_clipped(objective, grads)
    return objective, trajectory, grads, finite

  def _replicated_start(self, share, jit):
    """Starts every replica's share of a trajectory (arguments sharded by _shard)."""
    replica_start = tf.function(functools.partial(self._start_trajectory, share), jit_compile=jit)
    return tf.function(
      lambda params, first_batch: self.strategy.run(replica_start, (params, first_batch))
    )

  def _replicated_unroll(self, share, jit):
    """_unroll_and_gradients across replicas: each unrolls its share; gradients are averaged.

    The unroll compiles per replica (XLA where jit is on); the all-reduce, the finiteness test
    and the clip follow it on the averaged values, so every replica holds the same update.
    Returns the objective and finiteness as plain tensors, the trajectory and the meta-gradients
    per replica (what _replicated_meta_update takes).
    """
    replica_unroll = tf.function(
      functools.partial(self._objective_and_gradients, share), jit_compile=jit
    )

    def replica_step(trajectory, batches):
      objective, trajectory, grads = replica_unroll(trajectory, batches)
      # Equal shares: the mean over replicas of per-share means is the mean over the meta-batch.
      objective, grads = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.MEAN, (objective, grads)
      )
      grads, finite = self._checked_and_clipped(objective, grads)
      return objective, trajectory, grads, finite

    def step(trajectory, batches):
      objective, trajectory, grads, finite = self.strategy.run(replica_step, (trajectory, batches))
      local = lambda value: self.strategy.experimental_local_results(value)[0]  # all equal
      return local(objective), trajectory, grads, local(finite)

    return tf.function(step)

  def _shard(self, problem, values, axis):
    """Per-replica shares of a meta-batch's tensors (instances along `axis`); as is on 1 device."""
    if self.strategy is None:
      return values
    return distribute.shard_instances(
      self.strategy, values, problem.batch_size // self.num_replicas, axis
    )

  def _apply_meta_update(self, grads):
    self.meta_optimizer.apply_gradients(zip(grads, self.rule.trainable_variables))

  def _replicated_meta_update(self, grads):
    """Applies per-replica meta-gradients that are already averaged (all equal) everywhere."""

    def replica_update(grads):
      # Keras sums the gradients over the replicas (in the replica context, where it must apply
      # to mirrored variables): R copies of g / R sum to g (exactly when R is a power of 2).
      self._apply_meta_update([g / self.num_replicas for g in grads])

    self.strategy.run(replica_update, (grads,))

  def _checked_and_clipped(self, objective, grads):
    """(meta-gradients clipped to the global norm, whether objective and gradients are finite)."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
    finite = tf.logical_and(finite, tf.math.is_finite(objective))
    if self.config.meta_gradient_clip:
      grads, _ = tf.clip_by_global_norm(grads, self.config.meta_gradient_clip)
    return grads, finite

  def _objective_and_gradients(self, problem, trajectory, batches):
    """The unroll's objective, its detached end and the raw meta-gradients (zeros for None)."""
    variables = self.rule.trainable_variables
    with tf.GradientTape() as tape:
      meta_loss, trajectory, losses = unroll_lib.unroll(
        problem,
        self.rule,
        trajectory,
        batches,
        self.config.second_derivatives,
        recompute=self.config.recompute,
      )
      if self.config.meta_objective == "log_loss":
        objective = tf.reduce_mean(tf.math.log(losses + _LOG_FLOOR))
      else:
        objective = meta_loss / tf.cast(tf.shape(losses)[0], meta_loss.dtype)
    grads = tape.gradient(objective, variables)
    grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
    return objective, unroll_lib.detach(trajectory), grads

  # --- training loop ------------------------------------------------------------------------

  def validation_loss(self) -> float:
    """Mean loss of the fixed validation problems over all steps, or the last unroll's."""
    losses = evaluation.run_trajectories(
      self.validation_problem, self.rule, self.validation_seed, self.config.num_steps
    )
    if self.config.validation_metric == "final":
      value = float(np.mean(losses[-self.config.final_window() :]))
    else:
      value = float(np.mean(losses[1:]))
    return value if math.isfinite(value) else math.inf

  def train_trajectory(self, seed: int) -> tuple[float, int]:
    """One trajectory of truncated BPTT; returns (mean meta-loss, number of skipped updates)."""
    cfg = self.config
    family = seed % len(self.problems)  # seeds are consecutive within an epoch
    problem = self.problems[family]
    num_steps, unroll_length = cfg.stage(int(self.epoch.numpy()))
    params = problem.init_params(seed)
    batches = problem.sample_batches(seed, num_steps)
    first_batch = tf.nest.map_structure(lambda x: x[0], batches)
    trajectory = self._start[family](
      self._shard(problem, params, axis=0), self._shard(problem, first_batch, axis=0)
    )
    objectives = []
    for start in range(1, num_steps + 1, unroll_length):
      window = tf.nest.map_structure(lambda x, s=start: x[s : s + unroll_length], batches)
      objective, trajectory, grads, finite = self._train_unroll[family](
        trajectory, self._shard(problem, window, axis=1)
      )  # batches: [steps, instances, ...]
      if not bool(finite):
        step = int(self.meta_optimizer.iterations.numpy()) + 1
        self.log(
          f"non-finite meta-loss or meta-gradient at meta-step {step} (optimizee steps "
          f"{start}-{start + unroll_length - 1} of trajectory seed {seed}): update "
          "skipped, trajectory abandoned"
        )
        return (float(np.mean(objectives)) if objectives else math.nan), 1
      self._apply_gradients(grads)
      objectives.append(float(objective))
    return float(np.mean(objectives)), 0

  # --- the run directory: restore, run an epoch, save, log -----------------------------------

  def _check_output(self, output_dir):
    """Refuses a directory holding anything but this run (RunDirectoryError); writes nothing."""
    entries = set(os.listdir(output_dir)) if os.path.isdir(output_dir) else set()
    if not entries - {run_directory.LOCK_FILE}:
      return
    run_path = os.path.join(output_dir, run_directory.RUN_FILE)
    if not os.path.isfile(run_path):
      raise RunDirectoryError(
        f"{output_dir} is not empty and holds no l2l_tf run; choose a new --output_dir"
      )
    try:
      with open(run_path) as f:
        previous = json.load(f)
      # A run written before a setting existed ran with that setting's default.
      previous["config"] = {
        **dataclasses.asdict(MetaTrainingConfig()),
        **previous.get("config", {}),
      }
    except (ValueError, TypeError, AttributeError) as e:
      raise RunDirectoryError(f"{run_path}: unreadable run description ({e})") from None
    if _identity(previous) != _identity(json.loads(json.dumps(self._run_description()))):
      raise RunDirectoryError(
        f"{output_dir} holds another run (different configuration); choose a new --output_dir"
      )

  def _run_description(self):
    """What run.json records: the configuration and the run's metadata."""
    return {"config": dataclasses.asdict(self.config), "metadata": self.metadata}

  def train(self, output_dir: str) -> list[dict[str, Any]]:
    """Runs meta-training; resumes from output_dir's checkpoint if it holds this same run.

    One process at a time trains into a directory: a second one gets RunDirectoryError
    before anything is written. Returns the per-epoch history (list of dicts).
    """
    self._check_output(output_dir)
    with run_directory.exclusive_lock(output_dir):
      self._check_output(output_dir)  # another process may have started a run meanwhile
      atomic_files.atomic_write(
        os.path.join(output_dir, run_directory.RUN_FILE),
        json.dumps(self._run_description(), indent=2, sort_keys=True),
      )
      removed = run_directory.remove_leftovers(output_dir)
      if removed:
        self.log(f"removed what an interrupted run left: {', '.join(removed)}")
      run = self._restore(output_dir)
      try:
        for epoch in range(run.first_epoch, self.config.epochs):
          record = self._run_epoch(run, epoch)
          improved = self._save_epoch(run, record)
          self._log_epoch(run, record, improved)
      finally:
        run.writer.close()
    return run.history

  def _restore(self, output_dir):
    """Opens the run: its latest checkpoint and history, or a fresh start with best/ at epoch 0.

    history.json and TensorBoard are rewritten from the checkpoint's history, so an epoch
    re-run after a kill appears once, and one whose record never landed appears again.
    """
    run = _Run(output_dir)
    saved = dict(
      cells=self.rule.cells,
      meta_optimizer=self.meta_optimizer,
      epoch=self.epoch,
      best_validation=self.best_validation,
      history=run.history_json,
      consecutive_skips=run.skip_streak,
    )
    run.manager = tf.train.CheckpointManager(
      tf.train.Checkpoint(**saved), run.path(run_directory.CHECKPOINTS), max_to_keep=2
    )
    # A damaged or missing state file (checkpoints/checkpoint) hides the checkpoints from the
    # manager; restarting from epoch 0 would then overwrite best/ with the untrained optimizer.
    latest = run.manager.latest_checkpoint or _newest_checkpoint(
      run.path(run_directory.CHECKPOINTS)
    )
    if latest:
      stored = {name.split("/")[0] for name, _ in tf.train.list_variables(latest)}
      # A checkpoint from before history and consecutive_skips were saved lacks them.
      present = {
        name: value
        for name, value in saved.items()
        if name in stored or name not in ("history", "consecutive_skips")
      }
      tf.train.Checkpoint(**present).restore(latest).assert_existing_objects_matched()
      run.history = self._restored_history(run, "history" in present)
      self.log(f"resuming {output_dir} at epoch {int(self.epoch.numpy())}")
    self._check_replicas_resume_together(output_dir)
    atomic_files.atomic_write(
      run.path(run_directory.HISTORY_FILE), json.dumps(run.history, indent=2)
    )
    run.writer = self._rewrite_tensorboard(run)
    if not latest:
      self._imitate()  # here, so that a resumed run does not imitate again
      self._record_best(output_dir, self.validation_loss(), epoch=0)
      self.log(
        f"initial validation loss {float(self.best_validation.numpy()):.4g} "
        f"({self.initial_optimizer}, kept as best/ until an epoch improves on it)"
      )
    run.first_epoch = int(self.epoch.numpy())
    return run

  def _imitate(self):
    """The imitation warm start (config.imitate), on seeds no training trajectory uses."""
    cfg = self.config
    if not cfg.imitation_trajectories:
      return
    warm_start = imitation.Imitation(
      self.rule,
      imitation.make_teacher(cfg.imitate),
      cfg.meta_learning_rate,
      cfg.meta_gradient_clip,
      self.log,
    )
    # Epoch -1: below every training epoch's seeds (trajectory_seed spaces epochs 10,007 apart).
    seeds = [trajectory_seed(cfg.seed, -1, i) for i in range(cfg.imitation_trajectories)]
    warm_start.run(self.problems, seeds, cfg.num_steps, cfg.unroll_length, cfg.log_every)

  def _check_replicas_resume_together(self, output_dir):
    """Refuses to go on when the workers of a multi-worker run restored different epochs.

    Each worker resumes from its own directory; were they at different epochs, they would wait
    for each other's collectives forever. Every worker sees the same sums, so all stop together.
    """
    if self.strategy is None:
      return
    epoch = tf.cast(self.epoch, tf.float64)
    moments = tf.stack([epoch, epoch * epoch])

    def replica_sums():
      return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, moments)

    sums = tf.function(lambda: self.strategy.run(replica_sums))()
    total, squares = self.strategy.experimental_local_results(sums)[0].numpy()
    if self.num_replicas * squares != total * total:  # the epochs' variance is not 0
      raise ValueError(
        f"the workers resumed at different epochs ({output_dir} at epoch "
        f"{int(self.epoch.numpy())}, the mean over replicas "
        f"{total / self.num_replicas:g}); give every worker a copy of the same "
        "run directory"
      )

  def _restored_history(self, run, in_checkpoint):
    if in_checkpoint:
      return json.loads(run.history_json.numpy().decode())
    # An older checkpoint: history.json, without the epochs re-run from the checkpoint.
    try:
      with open(run.path(run_directory.HISTORY_FILE)) as f:
        history = json.load(f)
    except FileNotFoundError:
      return []
    return [record for record in history if record["epoch"] <= int(self.epoch.numpy())]

  def _rewrite_tensorboard(self, run):
    """A writer whose new event file holds the history so far; the older event files go."""
    directory = run.path(run_directory.TENSORBOARD)
    older = [
      name
      for name in (os.listdir(directory) if os.path.isdir(directory) else [])
      if name.startswith(run_directory.EVENT_FILE_PREFIX)
    ]
    writer = tf.summary.create_file_writer(directory)
    for record in run.history:
      _write_summaries(writer, record)
    writer.flush()
    for name in older:
      os.remove(os.path.join(directory, name))
    return writer

  def _run_epoch(self, run, epoch):
    """Trains the trajectories of 0-based `epoch` and validates; returns its history record."""
    cfg = self.config
    epoch_start = time.time()
    objectives, skipped = [], 0
    for index in range(cfg.trajectories_per_epoch):
      updates_before = int(self.meta_optimizer.iterations.numpy())
      objective, bad = self.train_trajectory(trajectory_seed(cfg.seed, epoch, index))
      skipped += bad
      if math.isfinite(objective):
        objectives.append(objective)
      applied = int(self.meta_optimizer.iterations.numpy()) > updates_before
      run.skip_streak.assign(bad if applied else run.skip_streak + bad)
      self._stop_if_diverged(run, epoch, index)
      fault_injection.reach("mid_epoch", epoch + 1)
      if (index + 1) % cfg.log_every == 0:
        self.log(
          f"epoch {epoch + 1}/{cfg.epochs} trajectory {index + 1}/"
          f"{cfg.trajectories_per_epoch} meta-loss "
          f"{np.mean(objectives[-cfg.log_every :]):.4g} "
          f"(best validation {float(self.best_validation.numpy()):.4g}) "
          f"{(time.time() - epoch_start) / (index + 1):.2f}s/trajectory "
          f"ETA {run.eta_seconds(cfg, epoch, index + 1):.0f}s"
        )
    validation = self.validation_loss()
    return {
      "epoch": epoch + 1,
      "meta_loss": float(np.mean(objectives)) if objectives else None,
      "validation_loss": validation,
      "skipped_updates": skipped,
      "epoch_seconds": time.time() - epoch_start,
    }

  def _stop_if_diverged(self, run, epoch, index):
    limit = self.config.max_consecutive_skips
    streak = int(run.skip_streak.numpy())
    if not limit or streak < limit:
      return
    kept = run_directory.best_epoch(run.history)
    raise TrainingDivergedError(
      f"meta-training stopped in epoch {epoch + 1}, trajectory {index + 1}: {streak} "
      "meta-updates in a row were skipped for a non-finite meta-loss or meta-gradient "
      f"(max_consecutive_skips={limit}); the optimizer diverges with these settings (e.g. "
      "too large an output scale or meta learning rate). best/ holds "
      + (self.initial_optimizer if kept == 0 else f"epoch {kept}'s optimizer")
    )

  def _save_epoch(self, run, record):
    """Keeps a finished epoch; returns whether it improved on the best validation loss.

    Order: best/ (if improved), then the checkpoint, which holds the weights, the meta-state and
    the history in one atomic write, then history.json and TensorBoard, which a restart
    rebuilds from the checkpoint. A kill before the checkpoint re-runs the epoch, and the re-run
    rewrites best/ with the same optimizer (training is deterministic).
    """
    epoch = record["epoch"]
    improved = record["validation_loss"] < float(self.best_validation.numpy())
    if improved:
      self._record_best(run.output_dir, record["validation_loss"], epoch)
    record["best_validation_loss"] = float(self.best_validation.numpy())
    record["best_epoch"] = epoch if improved else run_directory.best_epoch(run.history)
    run.history.append(record)
    self.epoch.assign(epoch)
    run.history_json.assign(json.dumps(run.history))
    with fault_injection.inside("checkpoint_shards", epoch):
      run.manager.save(checkpoint_number=epoch, options=fault_injection.checkpoint_options(epoch))
    fault_injection.reach("after_checkpoint", epoch)
    atomic_files.atomic_write(
      run.path(run_directory.HISTORY_FILE), json.dumps(run.history, indent=2)
    )
    _write_summaries(run.writer, record)
    run.writer.flush()
    return improved

  def _log_epoch(self, run, record, improved):
    cfg = self.config
    meta_loss = math.nan if record["meta_loss"] is None else record["meta_loss"]
    eta = run.eta_seconds(cfg, record["epoch"] - 1, cfg.trajectories_per_epoch)
    self.log(
      f"epoch {record['epoch']}/{cfg.epochs} meta-loss {meta_loss:.4g} validation "
      f"{record['validation_loss']:.4g} (best {record['best_validation_loss']:.4g}"
      f"{', saved' if improved else ''}) epoch {record['epoch_seconds']:.1f}s "
      f"ETA {eta:.0f}s"
    )

  @property
  def initial_optimizer(self) -> str:
    """What best/ holds before any epoch improves on it."""
    if "init_from" in self.metadata:
      return f"the starting optimizer {self.metadata['init_from'].get('path', '')}".rstrip()
    if self.config.imitation_trajectories:
      return f"the optimizer imitating {self.config.imitate}"
    return "the untrained optimizer"

  def _record_best(self, output_dir, validation, epoch):
    """Saves the rule as best/; at epoch 0 it is the untrained optimizer, and says so."""
    self.best_validation.assign(validation)
    metadata = dict(
      self.metadata,
      epoch=epoch,
      untrained=epoch == 0
      and "init_from" not in self.metadata
      and not self.config.imitation_trajectories,
      best_validation_loss=validation if math.isfinite(validation) else None,
      training=dataclasses.asdict(self.config),
    )
    with fault_injection.inside("best_swap", epoch, run_directory.BEST):
      optimizer_format.save_rule(self.rule, os.path.join(output_dir, run_directory.BEST), metadata)
