"""The paper's MNIST generalisation experiments (Figures 5 and 6) for one trained optimizer.

A trained MNIST optimizer runs unchanged on variants of the optimizee (the paper's base: a
784-20-10 sigmoid MLP, 100 steps), each against baselines tuned for that variant, on the same
held-out test problems (digits the optimizer never saw):

  base (100 steps), 200 steps, 40 hidden units, 2 hidden layers, ReLU (the paper's), tanh,
  3 hidden layers and 80 hidden units (ours), and (--sweep) the grid of 5-50 hidden units x 1-2
  layers.

Each variant's network (widths and activation) is marked "seen" when the optimizer's metadata
shows it was meta-trained on it (--train_networks): only unseen ones measure generalisation.

  python scripts/generalization.py --optimizer_path=savedmodels/mnist --output_dir=runs/gen

Writes OUTPUT_DIR/generalization.json, OUTPUT_DIR/generalization.md (table with the paper's
numbers beside ours), one PNG of loss curves per variant, and summary.png: for every variant,
the learned optimizer's final loss over the best tuned baseline's (below 1: the learned one
wins).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

from absl import flags
import numpy as np

from l2l_tf import atomic_files
from l2l_tf import cli
from l2l_tf import evaluation
from l2l_tf import optimizer_format
from l2l_tf import registry

flags.DEFINE_string("optimizer_path", None, "Trained MNIST optimizer.", required=True)
flags.DEFINE_string("output_dir", None, "Where tables and plots go.", required=True)
flags.DEFINE_integer("num_problems", 20, "Held-out runs per variant.", lower_bound=1)
flags.DEFINE_bool("sweep", False, "Also run the 5-50 units x 1-2 layers sweep.")
flags.DEFINE_enum("dataset_source", "embedded", ["embedded", "tfds", "idx"], "MNIST source.")
flags.DEFINE_string("data_dir", None, "Data directory for tfds/idx.")
flags.DEFINE_integer("seed", 0, "Seed of the held-out problems.", lower_bound=0)
flags.DEFINE_integer(
  "grid_points", 11, "Learning rates in the 1e-4..10 tuning grid.", lower_bound=2
)
FLAGS = flags.FLAGS

# Loss at the last step read off the paper's Figure 5 (about +-10%); None: not reported.
PAPER = {
  "base": {"learned": 0.25, "adam": 0.36, "rmsprop": 0.36, "nag": 0.32, "sgd": 0.46},
  "200 steps": {"learned": 0.21, "adam": 0.31, "rmsprop": 0.29, "nag": 0.26, "sgd": 0.33},
  "40 units": {"learned": 0.19, "adam": 0.31, "rmsprop": 0.32, "nag": 0.30, "sgd": 0.45},
  "2 layers": {"learned": 0.32, "adam": 0.70, "rmsprop": 0.73, "nag": 0.76, "sgd": 1.8},
  "relu": {"learned": None, "adam": 0.37, "rmsprop": 0.41, "nag": 0.36, "sgd": 0.45},
}
NAMES = ("learned", "adam", "rmsprop", "nag", "sgd")


def plot_summary(everything, path, num_problems):
  """Bar chart of final loss ratios, learned / best tuned baseline, one bar per variant."""
  names, ratios, labels = list(everything), [], []
  for name in names:
    finals = {n: everything[name]["results"][n]["final_loss_mean"] for n in NAMES}
    best = min(NAMES[1:], key=finals.get)
    ratios.append(finals["learned"] / finals[best])
    labels.append(f"{name} (vs {best})")
  fig, ax = evaluation.pyplot().subplots(figsize=(6.5, 0.35 * len(names) + 1.4))
  y = np.arange(len(names))[::-1]
  ax.barh(y, ratios, color=["tab:green" if r < 1 else "tab:red" for r in ratios])
  ax.axvline(1.0, color="black", linewidth=1)
  ax.set_xscale("log")
  ax.set_yticks(y, labels)
  ax.set_xlabel("final loss: learned / best tuned baseline (< 1: learned wins)")
  ax.set_title(f"MNIST generalisation, mean of {num_problems} held-out runs")
  evaluation.write_png(fig, path)


def variants(sweep):
  base = {"hidden_sizes": (20,), "activation": "sigmoid", "num_steps": 100}
  out = {
    "base": base,
    "200 steps": dict(base, num_steps=200),
    "40 units": dict(base, hidden_sizes=(40,)),
    "2 layers": dict(base, hidden_sizes=(20, 20)),
    "relu": dict(base, activation="relu"),
    "tanh": dict(base, activation="tanh"),
    "3 layers": dict(base, hidden_sizes=(20, 20, 20)),
    "80 units": dict(base, hidden_sizes=(80,)),
  }
  if sweep:
    for layers in (1, 2):
      for units in (5, 10, 20, 35, 50):
        out[f"sweep {units}x{layers}"] = dict(base, hidden_sizes=(units,) * layers)
  return out


def network(config):
  """The (hidden sizes, activation) of a variant or of an MNIST problem configuration."""
  return tuple(config["hidden_sizes"]), config["activation"]


def seen_networks(metadata):
  """The MNIST networks the optimizer was meta-trained on, from its provenance."""
  return {
    network(c)
    for c in optimizer_format.meta_training_problems(metadata)
    if c.get("name") == "mnist" and "hidden_sizes" in c and "activation" in c
  }


def main(argv):
  del argv
  rule, metadata = optimizer_format.load_rule(FLAGS.optimizer_path)
  seen = seen_networks(metadata)
  grid = tuple(float(x) for x in 10.0 ** np.linspace(-4, 1, FLAGS.grid_points))
  table, everything = [], {}
  todo = variants(FLAGS.sweep)
  progress = evaluation.Progress(
    "generalisation", len(todo), "variants", evaluation.print_now, interval=0
  )
  for name, v in todo.items():
    seen_here = network(v) in seen
    make = lambda split, n: registry.make_problem(  # pylint: disable=cell-var-from-loop
      "mnist", split, n, FLAGS.dataset_source, FLAGS.data_dir, v["hidden_sizes"], v["activation"]
    )
    results, losses = evaluation.compare(
      make("test", FLAGS.num_problems),
      {"learned": rule},
      seed=evaluation.TEST_SEED_OFFSET + FLAGS.seed,
      num_steps=v["num_steps"],
      tuning_problem=make("validation", FLAGS.num_problems),
      tuning_seed=1 + FLAGS.seed,
      learning_rates=grid,
      log=lambda line, variant=name: evaluation.print_now(f"{variant}: {line}"),
    )
    everything[name] = dict(
      results,
      variant={k: list(x) if isinstance(x, tuple) else x for k, x in v.items()},
      seen_in_meta_training=seen_here,
    )
    evaluation.plot(
      results,
      os.path.join(FLAGS.output_dir, f"{name.replace(' ', '_')}.png"),
      losses,
      title=f"MNIST {name}: {FLAGS.num_problems} held-out runs",
    )
    finals = {n: results["results"][n]["final_loss_mean"] for n in NAMES}
    best_baseline = min(finals[n] for n in NAMES[1:])
    row = (
      f"| {name} | {'yes' if seen_here else 'no'} | {v['num_steps']} | "
      + " | ".join(
        f"{finals[n]:.3g}"
        + (
          f" ({PAPER[name][n]})"
          if name in PAPER and PAPER[name][n]
          else " (fails)"
          if name in PAPER
          else ""
        )
        for n in NAMES
      )
      + f" | {'yes' if finals['learned'] < best_baseline else 'no'} |"
    )
    table.append(row)
    print(row, flush=True)
    progress.advance()
  header = (
    "| variant | seen in meta-training? | steps | "
    + " | ".join(NAMES)
    + " | learned best? |\n|"
    + "---|" * (len(NAMES) + 4)
  )
  text = (
    f"Final training loss, mean of {FLAGS.num_problems} held-out runs (paper's value in "
    f"parentheses).\nOptimizer: {FLAGS.optimizer_path} "
    f"({metadata.get('meta_trained_on', metadata).get('command', 'unknown command')})\n\n"
    + header
    + "\n"
    + "\n".join(table)
    + "\n"
  )
  atomic_files.atomic_write(os.path.join(FLAGS.output_dir, "generalization.md"), text)
  evaluation.write_json(everything, os.path.join(FLAGS.output_dir, "generalization.json"))
  plot_summary(everything, os.path.join(FLAGS.output_dir, "summary.png"), FLAGS.num_problems)
  print(text)


if __name__ == "__main__":
  cli.run(main)
