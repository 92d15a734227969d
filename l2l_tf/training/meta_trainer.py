"""Meta-training by truncated backpropagation through time (the paper's Section 3).

Each trajectory samples a new problem (new theta_0, new data) and zero optimizer state, runs
num_steps optimizee steps cut into unrolls of unroll_length, and after each unroll takes one
Adam step on the optimizer's weights; theta and the optimizer state carry over detached.
After every epoch the optimizer is evaluated on fixed validation problems and the best one is
kept (early stopping as in the paper).

Output directory layout:
  run.json           the run's configuration (a directory holding another run is refused)
  best/              the best optimizer so far (l2l_tf.io format), replaced atomically
  checkpoints/       tf.train checkpoints: weights, meta-optimizer state, epoch, best score
  history.json       per-epoch meta-loss, validation loss, time
  tensorboard/       summaries
"""
import dataclasses
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from l2l_tf import evaluation
from l2l_tf import io
from l2l_tf.training import unroll as unroll_lib


class RunDirectoryError(ValueError):
  """The output directory holds something other than this run."""


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

  def validate(self):
    """Raises ValueError with a one-line message for inconsistent settings."""
    for name in ("num_steps", "unroll_length", "epochs", "trajectories_per_epoch", "log_every"):
      if int(getattr(self, name)) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
    if self.num_steps % self.unroll_length:
      raise ValueError(f"num_steps ({self.num_steps}) must be a multiple of unroll_length "
                       f"({self.unroll_length})")
    if not (math.isfinite(self.meta_learning_rate) and self.meta_learning_rate > 0):
      raise ValueError(f"meta_learning_rate must be positive, got {self.meta_learning_rate}")
    if self.meta_gradient_clip < 0:
      raise ValueError(f"meta_gradient_clip must be >= 0, got {self.meta_gradient_clip}")
    resolve_jit_compile(self.jit_compile)
    if self.meta_objective not in META_OBJECTIVES:
      raise ValueError(f"meta_objective must be one of {', '.join(META_OBJECTIVES)}, got "
                       f"{self.meta_objective!r}")
    if self.validation_metric not in VALIDATION_METRICS:
      raise ValueError(f"validation_metric must be one of {', '.join(VALIDATION_METRICS)}, got "
                       f"{self.validation_metric!r}")


def resolve_jit_compile(setting):
  """'auto' -> XLA when a GPU or TPU is present (on CPU plain graphs measured faster)."""
  setting = str(setting).lower()
  if setting not in ("auto", "true", "false"):
    raise ValueError(f"jit_compile must be auto, true or false, got {setting!r}")
  if setting == "auto":
    return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))
  return setting == "true"


def trajectory_seed(seed, epoch, index):
  """Training seeds, disjoint from the small seeds used for validation and test problems."""
  return int((seed * 1_000_003 + epoch * 10_007 + index) % (2**31 - 1)) + 1_000_000


class MetaTrainer:
  """Meta-trains a LearnedUpdateRule on a problem family.

  Args:
    rule: the LearnedUpdateRule whose cells are trained (in place).
    problem: training problem family (its batch_size instances form one meta-batch).
    validation_problem: fixed validation problems (drawn with validation_seed).
    config: MetaTrainingConfig.
    validation_seed: seed of the validation problems.
    metadata: extra JSON-able facts stored with the best optimizer (problem config, ...).
  """

  def __init__(self, rule, problem, validation_problem, config, validation_seed=1,
               metadata=None, log=print):
    config.validate()
    self.rule = rule
    self.problem = problem
    self.validation_problem = validation_problem
    self.config = config
    self.validation_seed = validation_seed
    self.metadata = dict(metadata or {})
    self.log = log
    self.meta_optimizer = keras.optimizers.Adam(config.meta_learning_rate)
    self.meta_optimizer.build(rule.trainable_variables)
    self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    self.best_validation = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
    jit = resolve_jit_compile(config.jit_compile)
    self._start = tf.function(self._start_trajectory, jit_compile=jit)
    self._train_unroll = tf.function(self._unroll_and_gradients, jit_compile=jit)

  # --- graph pieces -------------------------------------------------------------------------

  def _start_trajectory(self, params, first_batch):
    return unroll_lib.start_trajectory(self.problem, self.rule, params, first_batch,
                                       self.config.second_derivatives)

  def _unroll_and_gradients(self, trajectory, batches):
    variables = self.rule.trainable_variables
    with tf.GradientTape() as tape:
      meta_loss, trajectory, losses = unroll_lib.unroll(
          self.problem, self.rule, trajectory, batches, self.config.second_derivatives)
      if self.config.meta_objective == "log_loss":
        objective = tf.reduce_mean(tf.math.log(losses + _LOG_FLOOR))
      else:
        objective = meta_loss / self.config.unroll_length
    grads = tape.gradient(objective, variables)
    grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
    finite = tf.logical_and(finite, tf.math.is_finite(objective))
    if self.config.meta_gradient_clip:
      grads, _ = tf.clip_by_global_norm(grads, self.config.meta_gradient_clip)
    return objective, unroll_lib.detach(trajectory), grads, finite

  # --- training loop ------------------------------------------------------------------------

  def validation_loss(self):
    """Mean loss of the fixed validation problems over all steps, or the last unroll's."""
    losses = evaluation.run_trajectories(self.validation_problem, self.rule,
                                         self.validation_seed, self.config.num_steps)
    if self.config.validation_metric == "final":
      value = float(np.mean(losses[-self.config.unroll_length:]))
    else:
      value = float(np.mean(losses[1:]))
    return value if math.isfinite(value) else math.inf

  def train_trajectory(self, seed):
    """One trajectory of truncated BPTT; returns (mean meta-loss, number of skipped updates)."""
    cfg = self.config
    params = self.problem.init_params(seed)
    batches = self.problem.sample_batches(seed, cfg.num_steps)
    trajectory = self._start(params, tf.nest.map_structure(lambda x: x[0], batches))
    objectives = []
    for start in range(1, cfg.num_steps + 1, cfg.unroll_length):
      window = tf.nest.map_structure(lambda x, s=start: x[s:s + cfg.unroll_length], batches)
      objective, trajectory, grads, finite = self._train_unroll(trajectory, window)
      if not bool(finite):
        step = int(self.meta_optimizer.iterations.numpy()) + 1
        self.log(f"non-finite meta-loss or meta-gradient at meta-step {step} (optimizee steps "
                 f"{start}-{start + cfg.unroll_length - 1} of trajectory seed {seed}): update "
                 "skipped, trajectory abandoned")
        return (float(np.mean(objectives)) if objectives else math.nan), 1
      self.meta_optimizer.apply_gradients(zip(grads, self.rule.trainable_variables))
      objectives.append(float(objective))
    return float(np.mean(objectives)), 0

  def _prepare_output(self, output_dir):
    run = {"config": dataclasses.asdict(self.config), "metadata": self.metadata}
    run_path = os.path.join(output_dir, "run.json")
    if os.path.isdir(output_dir) and os.listdir(output_dir):
      if not os.path.isfile(run_path):
        raise RunDirectoryError(f"{output_dir} is not empty and holds no l2l_tf run; choose a "
                                "new --output_dir")
      with open(run_path) as f:
        previous = json.load(f)
      # A run written before a setting existed ran with that setting's default.
      previous["config"] = {**dataclasses.asdict(MetaTrainingConfig()),
                            **previous.get("config", {})}
      if previous != json.loads(json.dumps(run)):
        raise RunDirectoryError(f"{output_dir} holds another run (different configuration); "
                                "choose a new --output_dir")
    os.makedirs(output_dir, exist_ok=True)
    io.atomic_write(run_path, json.dumps(run, indent=2, sort_keys=True))

  def train(self, output_dir):
    """Runs meta-training; resumes from output_dir's checkpoint if it holds this same run.

    Returns the per-epoch history (list of dicts).
    """
    cfg = self.config
    self._prepare_output(output_dir)
    checkpoint = tf.train.Checkpoint(
        cells=self.rule.cells, meta_optimizer=self.meta_optimizer, epoch=self.epoch,
        best_validation=self.best_validation)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(output_dir, "checkpoints"),
                                         max_to_keep=2)
    history_path = os.path.join(output_dir, "history.json")
    history = []
    if manager.latest_checkpoint:
      checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
      if os.path.isfile(history_path):
        with open(history_path) as f:
          history = json.load(f)
      self.log(f"resuming {output_dir} at epoch {int(self.epoch.numpy())}")
    writer = tf.summary.create_file_writer(os.path.join(output_dir, "tensorboard"))
    if not math.isfinite(float(self.best_validation.numpy())):
      self._record_best(output_dir, self.validation_loss(), epoch=0)
      self.log(f"initial validation loss {float(self.best_validation.numpy()):.4g}")

    first_epoch = int(self.epoch.numpy())
    run_start = time.time()
    for epoch in range(first_epoch, cfg.epochs):
      epoch_start = time.time()
      objectives, skipped = [], 0
      for index in range(cfg.trajectories_per_epoch):
        objective, bad = self.train_trajectory(trajectory_seed(cfg.seed, epoch, index))
        skipped += bad
        if math.isfinite(objective):
          objectives.append(objective)
        if (index + 1) % cfg.log_every == 0:
          done = (epoch - first_epoch) * cfg.trajectories_per_epoch + index + 1
          left = (cfg.epochs - epoch) * cfg.trajectories_per_epoch - index - 1
          eta = (time.time() - run_start) / done * left
          self.log(f"epoch {epoch + 1}/{cfg.epochs} trajectory {index + 1}/"
                   f"{cfg.trajectories_per_epoch} meta-loss "
                   f"{np.mean(objectives[-cfg.log_every:]):.4g} "
                   f"(best validation {float(self.best_validation.numpy()):.4g}) "
                   f"{(time.time() - epoch_start) / (index + 1):.2f}s/trajectory ETA {eta:.0f}s")
      validation = self.validation_loss()
      improved = validation < float(self.best_validation.numpy())
      if improved:
        self._record_best(output_dir, validation, epoch + 1)
      self.epoch.assign(epoch + 1)
      epoch_time = time.time() - epoch_start
      done = epoch + 1 - first_epoch
      eta = (time.time() - run_start) / done * (cfg.epochs - epoch - 1)
      record = {"epoch": epoch + 1, "meta_loss": float(np.mean(objectives)) if objectives else None,
                "validation_loss": validation, "best_validation_loss":
                float(self.best_validation.numpy()), "skipped_updates": skipped,
                "epoch_seconds": epoch_time}
      history.append(record)
      with writer.as_default(step=epoch + 1):
        if objectives:
          tf.summary.scalar("meta_loss", np.mean(objectives))
        tf.summary.scalar("validation_loss", validation)
      manager.save(checkpoint_number=epoch + 1)
      io.atomic_write(history_path, json.dumps(history, indent=2))
      self.log(f"epoch {epoch + 1}/{cfg.epochs} meta-loss {record['meta_loss'] or math.nan:.4g} "
               f"validation {validation:.4g} (best {record['best_validation_loss']:.4g}"
               f"{', saved' if improved else ''}) epoch {epoch_time:.1f}s ETA {eta:.0f}s")
    writer.flush()
    return history

  def _record_best(self, output_dir, validation, epoch):
    self.best_validation.assign(validation)
    metadata = dict(self.metadata, best_validation_loss=validation, epoch=epoch,
                    training=dataclasses.asdict(self.config))
    io.save_rule(self.rule, os.path.join(output_dir, "best"), metadata)
