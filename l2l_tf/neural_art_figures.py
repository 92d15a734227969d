"""The stylised images of a Neural Art evaluation: a PNG grid with one row per optimizer.

evaluation.run_trajectories keeps losses only; this module reruns each optimizer on the first
few test problems and keeps the final images:

    write_grid(path, problem, results, {"learned": rule}, seed, num_steps)
"""

import os
import textwrap

import numpy as np
import tensorflow as tf

from l2l_tf import evaluation
from l2l_tf import update_rules
from l2l_tf.training import unroll as unroll_lib

MAX_COLUMNS = 4  # test problems shown per row


def final_images(problem, rules, seed, num_steps):
  """{name: (images [batch_size, size, size, 3], losses [batch_size])} after num_steps steps.

  rules: {name: UpdateRule}; all run from the same initial images, in one traced graph.
  """

  @tf.function
  def run(params, batches):
    first = tf.nest.map_structure(lambda x: x[0], batches)
    rest = tf.nest.map_structure(lambda x: x[1:], batches)
    finals = {}
    for name, rule in rules.items():
      trajectory = unroll_lib.start_trajectory(problem, rule, params, first)
      _, trajectory, losses = unroll_lib.unroll(problem, rule, trajectory, rest)
      finals[name] = (trajectory.params["image"], losses[-1])
    return finals

  finals = run(problem.init_params(seed), problem.sample_batches(seed, num_steps))
  return {name: (images.numpy(), losses.numpy()) for name, (images, losses) in finals.items()}


def evaluated_rules(results, learned_rules):
  """{name: rule} of an evaluation: learned rules as given, baselines at their (tuned) rates."""
  rules = {}
  for name, result in results["results"].items():
    if name in learned_rules:
      rules[name] = learned_rules[name]
    else:
      rules[name] = update_rules.make_baseline(name, result["learning_rate"])
  return rules


def grid_path(plot_path):
  """Where the image grid goes beside the loss curves: eval.png -> eval_images.png."""
  stem, _ = os.path.splitext(plot_path)
  return stem + "_images.png"


def write_grid(path, problem, results, learned_rules, seed, num_steps, columns=MAX_COLUMNS):
  """Writes (atomically) the content crops, then each optimizer's final images, as a PNG.

  Rows follow results' optimizers, best final mean loss first; each image is titled with its
  own loss. The title says which feature network and style ran.
  """
  shown = problem.first_instances(min(columns, problem.batch_size))
  rules = evaluated_rules(results, learned_rules)
  order = sorted(rules, key=lambda n: results["results"][n]["final_loss_mean"])
  finals = final_images(shown, rules, seed, num_steps)
  rows = [("content", shown.content_images(seed).numpy(), None)]
  for name in order:
    images, losses = finals[name]
    rate = results["results"][name]["learning_rate"]
    label = name if rate is None else f"{name}\n(lr={rate:.2g})"
    rows.append((label, images, losses))
  _draw(path, rows, title=f"{problem.describe()}\nimages after step {num_steps}")


def _draw(path, rows, title):
  """rows: (label, images [N, H, W, 3], losses [N] or None) -> a PNG grid at path."""
  plt = evaluation.pyplot()
  num_columns = len(rows[0][1])
  fig, axes = plt.subplots(
    len(rows), num_columns, squeeze=False, figsize=(1.8 * num_columns + 0.6, 1.9 * len(rows) + 0.9)
  )
  for r, (label, images, losses) in enumerate(rows):
    for c in range(num_columns):
      ax = axes[r, c]
      ax.imshow(np.clip(images[c], 0.0, 1.0), interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if losses is not None:
        ax.set_title(f"loss {losses[c]:.3g}", fontsize=7)
    axes[r, 0].set_ylabel(label, fontsize=8)
  fig.suptitle("\n".join(textwrap.fill(line, 90) for line in title.split("\n")), fontsize=7)
  evaluation.write_png(fig, path)
