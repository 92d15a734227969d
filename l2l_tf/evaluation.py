"""Evaluating optimizers on held-out problems, the same problems for every optimizer.

    results, losses = compare(problem, {"learned": rule}, seed=..., num_steps=100,
                              tuning_problem=validation_problem)

Baselines (sgd, rmsprop, adam, nag) are tuned per problem family by a learning-rate grid on
validation problems for the best final mean loss (the paper's protocol), then run on the test
problems. Results have the JSON shape the scripts write:
  {"problem", "num_steps", "num_problems",
   "results": {name: {"learning_rate", "mean_loss" [num_steps + 1], "final_loss_mean",
                      "final_loss_std", "final_losses" [num_problems]}}}
The per-run final losses allow paired comparisons: every optimizer runs the same problems.
"""

import collections
import datetime
import io
import json
import math
import os
import platform
import shlex
import sys
import time

import numpy as np
import tensorflow as tf

from l2l_tf import atomic_files
from l2l_tf import registry
from l2l_tf import update_rules
from l2l_tf.training import unroll as unroll_lib

_IMPORTED_AT = time.monotonic()  # fallback origin of process_wall_seconds

# Seeds of test problems are offset by this (plus a script's --seed), so that they never
# coincide with training trajectories' or validation problems' seeds.
TEST_SEED_OFFSET = 10_000
# The tuning problems of a test seed use --seed + 1 (validation data, never the test problems).

DEFAULT_LEARNING_RATES = tuple(float(x) for x in 10.0 ** np.linspace(-4, 1, 21))

# Least seconds between two progress lines: slow loops report every item, fast ones stay quiet.
PROGRESS_INTERVAL_SECONDS = 5.0

# Traced trajectory graphs, most recently used last. Bounded: each graph holds its problem's data
# (a whole dataset for MNIST), so an unbounded cache would keep every problem ever run alive.
_compiled_runs = collections.OrderedDict()
_MAX_COMPILED_RUNS = 8


def _trajectory_function(problem, rule, jit_compile):
  """A tf.function running a whole trajectory; cached so each (problem, rule) traces once."""
  key = (problem, rule, jit_compile)
  if key in _compiled_runs:
    _compiled_runs.move_to_end(key)
  else:

    @tf.function(jit_compile=jit_compile)
    def run(params, batches):
      first = tf.nest.map_structure(lambda x: x[0], batches)
      rest = tf.nest.map_structure(lambda x: x[1:], batches)
      trajectory = unroll_lib.start_trajectory(problem, rule, params, first)
      _, _, losses = unroll_lib.unroll(problem, rule, trajectory, rest)
      return tf.concat([trajectory.loss[None], losses], axis=0)

    _compiled_runs[key] = run
    while len(_compiled_runs) > _MAX_COMPILED_RUNS:
      _compiled_runs.popitem(last=False)
  return _compiled_runs[key]


def run_trajectories(problem, rule, seed, num_steps, jit_compile=False):
  """Losses [num_steps + 1, batch_size] of `rule` on the problems drawn with `seed`.

  Row 0 is the loss at theta_0 (before the first step).
  """
  run = _trajectory_function(problem, rule, jit_compile)
  losses = run(problem.init_params(seed), problem.sample_batches(seed, num_steps))
  return losses.numpy().astype(np.float64)


def _final_mean(losses):
  final = float(np.mean(losses[-1]))
  return final if math.isfinite(final) else math.inf


def print_now(line):
  """Prints a line at once, also when stdout is a pipe or a file (the default `log`)."""
  print(line, flush=True)


def format_duration(seconds):
  """A duration for people: "42 s", "3.5 min" or "1.2 h"."""
  if seconds < 120:
    return f"{seconds:.0f} s"
  if seconds < 7200:
    return f"{seconds / 60:.1f} min"
  return f"{seconds / 3600:.1f} h"


class Progress:
  """Logs "<what>: <done>/<total> <units>, <elapsed>, ETA <left>" lines while a loop runs.

  Call advance() after each item. A line is logged when at least `interval` seconds have passed
  since the previous one, and always after the last item (without an ETA). The ETA averages
  the items after the first, which alone pays for tracing.
  """

  def __init__(self, what, total, units, log, interval=None, clock=time.monotonic):
    self.what, self.total, self.units, self.log = what, int(total), units, log
    self.interval = PROGRESS_INTERVAL_SECONDS if interval is None else interval
    self.clock = clock
    self.done = 0
    self.start = self.last_line = clock()
    self.first_done = None

  def advance(self):
    self.done += 1
    now = self.clock()
    if self.done == 1:
      self.first_done = now
    if self.done < self.total and now - self.last_line < self.interval:
      return
    self.last_line = now
    line = (
      f"{self.what}: {self.done}/{self.total} {self.units}, {format_duration(now - self.start)}"
    )
    if self.done < self.total:
      line += f", ETA {format_duration(self._seconds_per_item(now) * (self.total - self.done))}"
    self.log(line)

  def _seconds_per_item(self, now):
    if self.done == 1:
      return now - self.start
    return (now - self.first_done) / (self.done - 1)


def tune_learning_rate(
  problem, name, seed, num_steps, learning_rates=DEFAULT_LEARNING_RATES, log=None, score=None
):
  """The grid learning rate with the lowest score; returns (rate, {rate: score}).

  log: optional callable given progress lines ("tuning adam: 7/21 learning rates, ...").
  score: losses [num_steps + 1, problems] -> float (default: the final mean loss; non-finite
    scores count as inf).
  """
  score = score or _final_mean
  rate = tf.Variable(learning_rates[0], dtype=tf.float64, trainable=False)
  rule = update_rules.make_baseline(name, rate)
  progress = Progress(f"tuning {name}", len(learning_rates), "learning rates", log) if log else None
  scores = {}
  for lr in learning_rates:
    rate.assign(lr)
    value = float(score(run_trajectories(problem, rule, seed, num_steps)))
    scores[lr] = value if math.isfinite(value) else math.inf
    if progress is not None:
      progress.advance()
  best = min(scores, key=scores.get)
  return best, scores


def summarize(losses, learning_rate=None):
  final = losses[-1]
  return {
    "learning_rate": learning_rate,
    "mean_loss": [float(x) for x in np.mean(losses, axis=1)],
    "final_loss_mean": float(np.mean(final)),
    "final_loss_std": float(np.std(final)),
    "final_losses": [float(x) for x in final],
  }


def compare(
  problem,
  rules,
  seed,
  num_steps,
  baselines=tuple(registry.BASELINES),
  tuning_problem=None,
  tuning_seed=None,
  learning_rates=DEFAULT_LEARNING_RATES,
  fixed_learning_rates=None,
  log=print_now,
):
  """Runs every optimizer on the same problems.

  Returns (results in the JSON shape above, {name: raw losses [num_steps + 1, problems]}).

  Args:
    problem: the test problems (problem.batch_size of them, drawn with `seed`).
    rules: {name: UpdateRule} already configured (e.g. {"learned": rule}).
    baselines: names of baselines to tune and run.
    tuning_problem, tuning_seed: validation problems for the learning-rate grid (default: the
      test family with seed + 1, never the test problems themselves).
    fixed_learning_rates: {baseline: rate} to skip tuning for those baselines.
    log: callable given one line at a time: tuning progress and each tuned learning rate.
  """
  tuning_problem = tuning_problem or problem
  tuning_seed = seed + 1 if tuning_seed is None else tuning_seed
  results, losses = {}, {}
  for name, rule in rules.items():
    losses[name] = run_trajectories(problem, rule, seed, num_steps)
    results[name] = summarize(losses[name])
  for name in baselines:
    if fixed_learning_rates and name in fixed_learning_rates:
      lr = float(fixed_learning_rates[name])
    else:
      lr, _ = tune_learning_rate(tuning_problem, name, tuning_seed, num_steps, learning_rates, log)
      log(f"tuned {name}: learning_rate={lr:.3g}")
    losses[name] = run_trajectories(problem, update_rules.make_baseline(name, lr), seed, num_steps)
    results[name] = summarize(losses[name], lr)
  summary = {
    "problem": problem.name,
    "num_steps": int(num_steps),
    "num_problems": int(problem.batch_size),
    "results": results,
  }
  return summary, losses


def format_table(results):
  """A fixed-width table of final losses, best first."""
  rows = sorted(results["results"].items(), key=lambda kv: kv[1]["final_loss_mean"])
  lines = [
    f"{results['problem']}: loss at step {results['num_steps']} over "
    f"{results['num_problems']} held-out problems",
    f"{'optimizer':<10} {'learning_rate':>13} {'mean':>10} {'std':>10}",
  ]
  for name, r in rows:
    lr = "-" if r["learning_rate"] is None else f"{r['learning_rate']:.3g}"
    lines.append(f"{name:<10} {lr:>13} {r['final_loss_mean']:>10.4g} {r['final_loss_std']:>10.4g}")
  return "\n".join(lines)


def process_wall_seconds():
  """Wall seconds since this process started (Linux); elsewhere since this module's import."""
  try:
    with open("/proc/self/stat") as f:  # field 22, start time in clock ticks after boot
      start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
      uptime = float(f.read().split()[0])
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
  except (OSError, ValueError, IndexError):
    return time.monotonic() - _IMPORTED_AT


def provenance():
  """What a result file records besides numbers: the command, its wall time, machine, date."""
  return {
    "command": "python " + shlex.join(sys.argv),
    "wall_seconds": round(process_wall_seconds(), 1),
    "machine": {
      "cpu_count": os.cpu_count(),
      "platform": platform.platform(),
      "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
      "tensorflow": tf.__version__,
    },
    "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
  }


def write_json(results, path):
  """Writes results atomically as JSON with a "provenance" block (unless results has one)."""
  results = dict(results)
  results.setdefault("provenance", provenance())
  atomic_files.atomic_write(path, json.dumps(results, indent=2, allow_nan=True))


def plot(results, path, losses=None, title=None):
  """Mean loss per step (log scale) per optimizer, as a PNG written atomically.

  losses: optional {name: [T+1, problems]} raw losses; their 25-75% band is shaded.
  """
  fig, ax = pyplot().subplots(figsize=(6, 4))
  for name, r in sorted(results["results"].items()):
    mean = np.asarray(r["mean_loss"])
    steps = np.arange(len(mean))
    label = name if r["learning_rate"] is None else f"{name} (lr={r['learning_rate']:.2g})"
    (line,) = ax.plot(steps, mean, label=label, lw=2 if name == "learned" else 1)
    if losses and name in losses:
      low, high = np.percentile(losses[name], [25, 75], axis=1)
      ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15, lw=0)
  ax.set_yscale("log")
  ax.set_xlabel("step")
  ax.set_ylabel("loss (mean; band: 25-75%)" if losses else "mean loss")
  ax.set_title(title or f"{results['problem']}: {results['num_problems']} held-out problems")
  ax.legend(fontsize=8)
  write_png(fig, path)


def pyplot():
  """matplotlib.pyplot on the file-only Agg backend (imported lazily: plotting is optional)."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  return plt


def write_png(fig, path):
  """Lays out, writes atomically as a PNG, and closes a figure made with pyplot()."""
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=120)
  pyplot().close(fig)
  atomic_files.atomic_write(path, buffer.getvalue())
