r"""Writes docs/RESULTS.md from the result files in results/, the only source of its numbers.

    python scripts/make_results.py            # regenerate docs/RESULTS.md
    python scripts/make_results.py --check    # exit 1 if docs/RESULTS.md is not up to date

Every experiment panel of the paper (and our extra panels) names the JSON file its experiment
command writes (results/<file>, exactly as written, with the "provenance" block that
evaluation.write_json adds: command, wall time, machine, date), or the few files one table
combines (then each file's provenance is shown). For each panel the page shows
our learned optimizer's and each tuned baseline's mean and spread (std over the held-out runs)
beside the paper's value, the figure if present, the command, its wall time and machine.
Panels whose file is missing are listed as "not run yet" with the command that makes them.
The output depends on the result files alone (sorted rows, fixed number formats), so the page
regenerates byte for byte.
"""

import contextlib
import dataclasses
import json
import math
import os
import sys
from typing import Callable, Optional

from absl import flags
import numpy as np

from l2l_tf import atomic_files
from l2l_tf import cli
from l2l_tf import evaluation
from l2l_tf.training import run_directory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string(
  "root",
  ROOT,
  "Repository root: reads ROOT/results/, writes "
  "ROOT/docs/RESULTS.md; figure paths are relative to it.",
)
flags.DEFINE_bool(
  "check",
  False,
  "Write nothing; exit 1 if docs/RESULTS.md differs from what the result files generate (for CI).",
)
FLAGS = flags.FLAGS

RESULTS_DIR = "results"
OUTPUT = os.path.join("docs", "RESULTS.md")
REGENERATE = "python scripts/make_results.py"

# Loss read off the paper's figures (about +-10%), copied from PAPER.md's table; the paper's
# LSTM is our "learned". A string is a value the paper gives in words.
PAPER = {
  "quadratic": {"learned": 0.04, "adam": 0.05, "rmsprop": 0.06, "nag": 0.08, "sgd": 0.22},
  "mnist": {"learned": 0.25, "adam": 0.36, "rmsprop": 0.36, "nag": 0.32, "sgd": 0.46},
  "mnist_200_steps": {"learned": 0.21, "adam": 0.31, "rmsprop": 0.29, "nag": 0.26, "sgd": 0.33},
  "mnist_40_units": {"learned": 0.19, "adam": 0.31, "rmsprop": 0.32, "nag": 0.30, "sgd": 0.45},
  "mnist_2_layers": {"learned": 0.32, "adam": 0.70, "rmsprop": 0.73, "nag": 0.76, "sgd": 1.8},
  "mnist_relu": {
    "learned": "fails (~2.3+)",
    "adam": 0.37,
    "rmsprop": 0.41,
    "nag": 0.36,
    "sgd": 0.45,
  },
  "cifar10": {"learned": 0.81, "adam": 0.91, "rmsprop": 0.87, "nag": 0.83, "sgd": 1.06},
  "cifar2": {"learned": 0.05, "adam": 0.07, "rmsprop": 0.085, "nag": 0.065, "sgd": 0.11},
}

MNIST_FULL = "--dataset_source=idx --data_dir=../shared/data/mnist-full"
GENERALIZATION_DIR = "results/mnist_generalization"


class ResultFileError(ValueError):
  """A result file that is not the JSON its panel expects."""


def evaluation_rows(results):
  """Rows of an evaluation JSON (scripts/evaluate.py's shape): one per optimizer."""
  steps, runs = results["num_steps"], results["num_problems"]
  return [
    {
      "optimizer": name,
      "learning_rate": r["learning_rate"],
      "steps": steps,
      "runs": runs,
      "mean": r["final_loss_mean"],
      "std": r["final_loss_std"],
      "finals": r.get("final_losses"),
    }
    for name, r in results["results"].items()
  ]


def paired_difference(rows):
  """Learned minus the best tuned baseline, run by run (every optimizer ran the same problems):
  (learned row, baseline row, differences), or None without per-run losses."""
  learned = [r for r in rows if r["learning_rate"] is None and r.get("finals")]
  baselines = [r for r in rows if r["learning_rate"] is not None and r.get("finals")]
  if not (learned and baselines):
    return None
  runs = len(learned[0]["finals"])
  if runs < 2 or runs != len(baselines[0]["finals"]):  # no standard error / not the same runs
    return None
  return learned[0], baselines[0], np.subtract(learned[0]["finals"], baselines[0]["finals"])


def standard_error(diff):
  return float(np.std(diff, ddof=1) / np.sqrt(len(diff)))


def paired_difference_line(rows):
  """The paired difference's mean, standard error and sign count; empty without per-run
  losses (older result files)."""
  paired = paired_difference(rows)
  if paired is None:
    return []
  learned, baseline, diff = paired
  return [
    f"Paired over the {len(diff)} runs, {optimizer_label(learned)} minus "
    f"{optimizer_label(baseline)}: {format_number(float(np.mean(diff)))} (standard error "
    f"{format_number(standard_error(diff))}; below 0: the learned optimizer is lower; "
    f"{int(np.sum(diff < 0))} of {len(diff)} runs lower).",
    "",
  ]


def verdict(rows, learned, best):
  """ "yes" / "**no**" by the means; "tie" when the paired difference is within two standard
  errors of zero."""
  paired = paired_difference(rows)
  if paired is not None:
    diff = paired[2]
    if abs(float(np.mean(diff))) < 2 * standard_error(diff):
      return "tie (paired difference within 2 standard errors)"
  return "yes" if _sort_key(learned["mean"]) < _sort_key(best["mean"]) else "**no**"


def generalization_rows(variant):
  """evaluation_rows of one generalization.py variant; the learned row says whether the
  optimizer was meta-trained on that network (then it is no test of generalisation)."""
  rows = evaluation_rows(variant)
  seen = variant.get("seen_in_meta_training")
  if seen is not None:
    for row in rows:
      if row["learning_rate"] is None:
        row["note"] = "meta-trained on this network" if seen else "network held out"
  return rows


def keras_fit_rows(data):
  """Rows of benchmarks/keras_mnist_fit.py's JSON: training loss over the last 50 steps."""
  rows = []
  for name, r in data["results"].items():
    losses = [run["train_loss_last"] for run in r["runs"]]
    mean = sum(losses) / len(losses)
    std = (sum((x - mean) ** 2 for x in losses) / len(losses)) ** 0.5
    rate = r.get("learning_rate", 0.001 if name == "adam_default" else None)
    rows.append(
      {
        "optimizer": name,
        "note": f"test accuracy {r['test_accuracy']:.4f}",
        "learning_rate": rate,
        "steps": f"{data['epochs']} epoch(s)",
        "runs": len(losses),
        "mean": mean,
        "std": std,
      }
    )
  return rows


def seeds_rows(data):
  """Rows of benchmarks/mnist_seeds.py's JSON: each optimizer, then the spread over them."""
  runs = data["num_problems"]
  rows = [
    {
      "optimizer": path,
      "note": f"step {step}",
      "learning_rate": None,
      "steps": int(step),
      "runs": runs,
      "mean": value,
      "std": None,
    }
    for path, result in data["optimizers"].items()
    for step, value in result.items()
  ]
  rows += [
    {
      "optimizer": f"mean over the {len(data['optimizers'])}",
      "note": f"std: across them, step {step}",
      "learning_rate": None,
      "steps": int(step),
      "runs": runs,
      "mean": spread["mean"],
      "std": spread["std"],
    }
    for step, spread in data["spread"].items()
  ]
  return rows


def _short_path(path):
  """A run's optimizer by name: RUN/X for results/training/RUN/X (best/, an exported epoch),
  else the last component."""
  parts = path.rstrip("/").split("/")
  in_run = parts[-1] == "best" or (len(parts) > 2 and parts[-3] == "training")
  return "/".join(parts[-2:]) if in_run and len(parts) > 1 else parts[-1] or path


def _best_record(history):
  """{epoch, validation_loss} of what the run's best/ holds (epoch 0: the optimizer it started
  from, when no epoch validated better)."""
  return {
    "epoch": run_directory.best_epoch(history),
    "validation_loss": history[-1]["best_validation_loss"],
  }


def training_rows(runs):
  """One row per training run directory: its recipe and its validation history."""
  rows = []
  for name, run in runs.items():
    config, metadata, history = run["run"]["config"], run["run"]["metadata"], run["history"]
    stages = config.get("curriculum") or [[config["num_steps"], config["unroll_length"]]]
    start = (metadata.get("init_from") or {}).get("path")
    if not start:  # runs from before the lineage was recorded: their command line says
      start = next(
        (
          arg.split("=", 1)[1]
          for arg in metadata.get("command", "").split()
          if arg.startswith("--init_from=")
        ),
        "scratch",
      )
    best = _best_record(history)
    rows.append(
      {
        "problem": name,
        "network": metadata.get("optimizer", "lstm"),
        "start": _short_path(start),
        "stages": ", ".join(f"{t}x{u}" for t, u in stages),
        "meta_lr": config["meta_learning_rate"],
        "seed": config.get("seed", 0),
        "trajectories": len(history) * config["trajectories_per_epoch"],
        "minutes": sum(h["epoch_seconds"] for h in history) / 60,
        "validation": " ".join(f"{h['validation_loss']:.3f}" for h in history),
        "random_scale": config.get("random_scale") or 1.0,
        "best": f"{best['validation_loss']:.4f} (epoch {best['epoch']}"
        + (": the starting optimizer)" if best["epoch"] == 0 else ")"),
        "jit_compile": "",
      }
    )
  return rows


def sharing_rows(data):
  """Rows of benchmarks/sharing_quadratic.py's results.json, pooled over meta-training seeds.

  The std is over all (seed, held-out problem) pairs, pooled exactly from each seed's mean and
  std; the per-seed means go to the detail column.
  """
  rows = []
  seeds = [results for _, results in sorted(data["per_seed"].items(), key=lambda kv: int(kv[0]))]
  for name, overall in data["overall"].items():
    per_seed = [
      seed["evaluation"]["results"][name] for seed in seeds if name in seed["evaluation"]["results"]
    ]
    second_moment = sum(
      r["final_loss_std"] ** 2 + r["final_loss_mean"] ** 2 for r in per_seed
    ) / len(per_seed)
    mean = sum(r["final_loss_mean"] for r in per_seed) / len(per_seed)
    detail = f"median {format_number(overall['final_loss_median'])}"
    if "final_loss_mean_per_seed" in overall:
      detail += "; per seed " + " / ".join(
        format_number(x) for x in overall["final_loss_mean_per_seed"]
      )
    rows.append(
      {
        "optimizer": name,
        "learning_rate": overall.get("learning_rate"),
        "steps": data["num_steps"],
        "runs": data["num_problems"] * len(per_seed),
        "mean": overall["final_loss_mean"],
        "std": math.sqrt(max(0.0, second_moment - mean**2)),
        "detail": detail,
      }
    )
  return rows


def throughput_rows(data):
  """Rows of benchmarks/throughput.py --output_json: one per problem and jit setting."""
  return [dict(r, unroll_length=data["unroll_length"]) for r in data["results"]]


def memory_rows(data):
  """Rows of benchmarks/meta_training_memory.py --output_json: one per configuration."""
  return list(data["results"])


def _memory_cell(row, value):
  """A memory column of row: value(row) in MiB, or where a memory limit stopped the run."""
  if row["peak_mib"] is None:
    return f"stopped ({row['stopped_by']})"
  return f"{value(row):,.0f}"


def sensitivity_rows(data):
  """Rows of benchmarks/mnist_paper_setting.py's step-size study: the learned update and Adam's
  tuned learning rate multiplied by each scale, on the test runs of its first horizon."""
  step = next(iter(data["horizons"]))  # the study runs at the first of --horizons
  runs = data["horizons"][step]["num_problems"]
  return [
    {"scale": s["scale"], "steps": step, "runs": runs, "learned": s["learned"], "adam": s["adam"]}
    for s in data.get("sensitivity", [])  # none when run with --scales=''
  ]


def runs_by_column_rows(files, columns):
  """One row per optimizer of benchmarks/mnist_seeds.py files (files: {path: JSON}), with its
  mean loss in each of columns ((header, result file, step), ...); None where a file lacks it.

  Unlike seeds_rows, no mean over the optimizers: these are different recipes, not seeds."""
  rows = {}
  for header, path, step in columns:
    for name, losses in files[path]["optimizers"].items():
      row = rows.setdefault(name, {"optimizer": _short_path(name), "losses": {}})
      row["losses"][header] = losses.get(step)
  return list(rows.values())


def peer_speed_rows(data):
  """Rows of benchmarks/peer_speed.py's JSON: each implementation's meta-training throughput and
  l2l_tf's throughput divided by it (below 1: l2l_tf is slower)."""
  speeds = data["coord_steps_per_s"]
  return [
    {
      "implementation": name,
      "problem": data["problem"],
      "coord_steps_per_s": speed,
      "l2l_tf_ratio": speeds["l2l_tf"] / speed,
    }
    for name, speed in speeds.items()
  ]


def keras_step_rows(data):
  """Rows of benchmarks/keras_step_time.py's JSON: one per (jit_compile, optimizer), with its
  median model.fit batch time and its ratios to Adam's; an optimizer that refused the model
  gets a row saying so."""
  rows = []
  for jit, timing in data["jit_compile"].items():
    for name, row in timing["optimizers"].items():
      rows.append(dict(row, optimizer=name, jit=jit, refused=None))
    for name, message in timing["refused"].items():
      # its reason, without the group preamble and the advice that follow
      reason = message.split("refuses it: ")[-1].split(". ")[0]
      rows.append({"optimizer": name, "jit": jit, "refused": f"refused: {reason}"})
  return rows


def format_number(x):
  """4 significant digits, the same on every machine ("-" for none)."""
  if x is None:
    return "-"
  if isinstance(x, str):
    return x
  return f"{x:.4g}"


def optimizer_label(row):
  """The optimizer's name with the row's note, if any: "learned (network held out)"."""
  return f"{row['optimizer']} ({row['note']})" if row.get("note") else row["optimizer"]


def _rate(x):
  return "-" if x is None else f"{x:.3g}"


# (header, row -> cell) of each kind of table.
LOSS_COLUMNS = (
  ("optimizer", lambda r: optimizer_label(r)),
  ("learning rate (tuned)", lambda r: _rate(r["learning_rate"])),
  ("step", lambda r: str(r["steps"])),
  ("runs", lambda r: str(r["runs"])),
  ("mean loss", lambda r: format_number(r["mean"])),
  ("std", lambda r: format_number(r["std"])),
  ("paper", lambda r: format_number(r.get("paper"))),
)
TRAINING_COLUMNS = (
  ("run", lambda r: r["problem"]),
  ("optimizer network", lambda r: r["network"]),
  ("starts from", lambda r: r["start"]),
  ("stages (steps x unroll)", lambda r: r["stages"]),
  ("meta lr", lambda r: f"{r['meta_lr']:g}"),
  ("random scale", lambda r: f"{r['random_scale']:g}" if r["random_scale"] != 1 else "-"),
  ("seed", lambda r: str(r["seed"])),
  ("trajectories", lambda r: str(r["trajectories"])),
  ("minutes", lambda r: f"{r['minutes']:.1f}"),
  ("validation loss per epoch", lambda r: r["validation"]),
  ("best", lambda r: r["best"]),
)
SPEED_COLUMNS = (
  ("problem", lambda r: r["problem"]),
  ("coordinates", lambda r: f"{r['coordinates']:,}"),
  ("unroll", lambda r: str(r["unroll_length"])),
  ("jit_compile", lambda r: str(r["jit_compile"]).lower()),
  # Files written before --lstm_kernels existed timed the graph ops.
  ("lstm kernel", lambda r: r.get("lstm_kernel", "graph")),
  ("coord-steps/s", lambda r: f"{r['coord_steps_per_s']:,.0f}"),
  ("compile s", lambda r: f"{r['compile_s']:.1f}"),
)
MEMORY_COLUMNS = (
  ("problem", lambda r: r["problem"]),
  ("parameters", lambda r: f"{r['coordinates']:,}" if r["peak_mib"] is not None else "-"),
  ("unroll", lambda r: str(r["unroll"])),
  ("lstm kernel", lambda r: r["lstm_kernel"]),
  ("recompute", lambda r: r["recompute"]),
  ("peak MiB", lambda r: _memory_cell(r, lambda x: x["peak_mib"])),
  ("above setup MiB", lambda r: _memory_cell(r, lambda x: x["peak_mib"] - x["setup_mib"])),
  ("seconds", lambda r: f"{r['seconds']:.2f}" if r["peak_mib"] is not None else "-"),
)
SENSITIVITY_COLUMNS = (
  ("scale", lambda r: f"{r['scale']:g}"),
  ("step", lambda r: str(r["steps"])),
  ("runs", lambda r: str(r["runs"])),
  ("learned (update x scale)", lambda r: format_number(r["learned"])),
  ("adam (tuned rate x scale)", lambda r: format_number(r["adam"])),
)
KERAS_STEP_COLUMNS = (
  ("optimizer", lambda r: r["optimizer"]),
  ("jit_compile", lambda r: r["jit"]),
  ("batch ms (wall)", lambda r: "-" if r["refused"] else f"{r['step_ms']:.3f}"),
  ("batch ms (CPU)", lambda r: "-" if r["refused"] else f"{r['cpu_ms']:.3f}"),
  ("wall / Adam's", lambda r: r["refused"] or f"{r['over_adam_step_time']:.2f}"),
  ("CPU / Adam's", lambda r: "-" if r["refused"] else f"{r['over_adam_cpu_time']:.2f}"),
  (
    "state bytes per parameter",
    lambda r: "-" if r["refused"] else f"{r['state_bytes_per_param']:.0f}",
  ),
)
PEER_SPEED_COLUMNS = (
  ("implementation", lambda r: r["implementation"]),
  ("problem", lambda r: r["problem"]),
  ("coord-steps/s", lambda r: f"{r['coord_steps_per_s']:,.0f}"),
  ("l2l_tf / this", lambda r: format_number(r["l2l_tf_ratio"])),
)


def runs_by_column_columns(columns):
  """The table of runs_by_column_rows: the optimizer, then one column per (header, file, step)."""
  return (("optimizer", lambda r: r["optimizer"]),) + tuple(
    (header, lambda r, header=header: format_number(r["losses"].get(header)))
    for header, _, _ in columns
  )


@dataclasses.dataclass(frozen=True)
class Panel:
  """One experiment panel: where its numbers come from and how to make them."""

  key: str  # anchor, and the PAPER entry if the paper has the panel
  title: str
  result_file: str  # relative to the repository root
  command: str  # what writes the panel's files (shown when one is missing)
  rows: Callable  # result file's JSON -> table rows
  figure: Optional[str] = None  # relative to the repository root
  more_figures: tuple = ()  # shown after figure (neural art: the stylised images)
  paper_step: Optional[str] = None  # the step the paper's values are read at
  note: str = ""
  columns: tuple = LOSS_COLUMNS
  summarize: bool = True  # False: the index links to the table without picking a row
  more_files: tuple = ()  # further result files of one table: rows then get {path: JSON}
  order: Optional[Callable] = None  # row -> sort key, for tables other than LOSS_COLUMNS

  @property
  def files(self):
    return (self.result_file,) + self.more_files


def _evaluate_command(problem_flags, name, steps_flag=""):
  return (
    f"python scripts/evaluate.py {problem_flags}{steps_flag} "
    f"--output_json=results/{name}.json --output_plot=docs/figures/{name}.png"
  )


PAPER_VARIANTS = ("40 units", "2 layers", "relu")  # the paper's Figure 5; the others are ours


def _generalization_panel(key, title, variant):
  return Panel(
    key,
    title,
    f"{GENERALIZATION_DIR}/generalization.json",
    f"python scripts/generalization.py --optimizer_path=savedmodels/mnist {MNIST_FULL} "
    f"--sweep --output_dir={GENERALIZATION_DIR}",
    lambda data: generalization_rows(data[variant]),
    figure=f"{GENERALIZATION_DIR}/{variant.replace(' ', '_')}.png",
    paper_step="100" if variant in PAPER_VARIANTS else None,
    note="The shipped optimizer run unchanged on this variant of the 784-20-10 sigmoid MLP; "
    "the learned row says whether its meta-training included this network.",
  )


def _mnist_panel(key, title, horizon):
  return Panel(
    key,
    title,
    "results/mnist_paper_setting.json",
    "python benchmarks/mnist_paper_setting.py --optimizer_path=savedmodels/mnist "
    f"{MNIST_FULL} --output_json=results/mnist_paper_setting.json",
    lambda data: evaluation_rows(data["horizons"][str(horizon)]),
    paper_step=str(horizon),
    note="784-20-10 sigmoid MLP on full MNIST (t10k digits), minibatches of 128.",
  )


def _seeds_command(
  result_file,
  runs,
  extra_flags="--horizons=100,200",
  problem_flags=f"--problem=mnist {MNIST_FULL}",
  runs_dir="results/training",
):
  """benchmarks/mnist_seeds.py over RUNS_DIR/RUN/best of each run (RUN/X: that path)."""
  paths = ",".join(f"{runs_dir}/{run}" + ("" if "/" in run else "/best") for run in runs)
  return (
    f"python benchmarks/mnist_seeds.py {problem_flags} --optimizer_paths={paths} "
    f"{extra_flags} --output_json=results/{result_file}"
  )


def _seeds_panel(key, title, result_file, runs, what):
  """benchmarks/mnist_seeds.py over results/training/RUN/best of each meta-training seed."""
  return Panel(
    key,
    title,
    f"results/{result_file}",
    _seeds_command(result_file, runs),
    seeds_rows,
    summarize=False,
    note=f"Rows: {what}; the same 20 t10k runs as the MNIST panels, whose tuned baselines apply.",
  )


def _runs_by_column_panel(key, title, columns, commands, note):
  """One table of mnist_seeds.py results: a row per optimizer, a column per (header, result
  file, step) of columns; commands write the files."""
  files = tuple(dict.fromkeys(path for _, path, _ in columns))  # each once, in column order
  first = columns[0][0]
  return Panel(
    key,
    title,
    files[0],
    "\n".join(commands),
    # load_result gives {path: JSON} for several files, the JSON itself for one
    lambda data: runs_by_column_rows(data if len(files) > 1 else {files[0]: data}, columns),
    note=note,
    columns=runs_by_column_columns(columns),
    more_files=files[1:],
    order=lambda r: (_sort_key(r["losses"][first]), r["optimizer"]),  # best first
  )


def _sensitivity_panel(key, title, result_file, extra_flags=""):
  """The step-size study of benchmarks/mnist_paper_setting.py (its --scales)."""
  return Panel(
    key,
    title,
    f"results/{result_file}",
    "python benchmarks/mnist_paper_setting.py --optimizer_path=savedmodels/mnist "
    f"{MNIST_FULL}{extra_flags} --output_json=results/{result_file}",
    sensitivity_rows,
    note="The shipped optimizer's update and tuned Adam's learning rate multiplied by the same "
    "scale (what LearnedOptimizer's learning_rate does), on the same t10k test runs as the "
    "MNIST panels; scale 1 is each as trained or tuned.",
    columns=SENSITIVITY_COLUMNS,
    order=lambda r: r["scale"],
  )


# The runs that competed to become stage 4 (the training table has each run's recipe), on the
# shipped network and its variants; s200_lowlr only on the shipped network.
STAGE4_CANDIDATES = ("ft200", "full200", "netmix", "netmix200")
STAGE4_COLUMNS = (  # (column, result file, step)
  ("step 100", "results/mnist_stage4_candidates.json", "100"),
  ("step 200", "results/mnist_stage4_candidates.json", "200"),
  ("2 layers, step 100", "results/mnist_stage4_candidates_2_layers.json", "100"),
  ("ReLU, step 100", "results/mnist_stage4_candidates_relu.json", "100"),
  ("tanh (held out), step 100", "results/mnist_stage4_candidates_tanh.json", "100"),
)
STAGE4_COMMANDS = (
  _seeds_command(
    "mnist_stage4_candidates.json", ("ft200", "s200_lowlr", "full200", "netmix", "netmix200")
  ),
  _seeds_command(
    "mnist_stage4_candidates_2_layers.json",
    STAGE4_CANDIDATES,
    "--horizons=100 --hidden_sizes=20,20",
  ),
  _seeds_command(
    "mnist_stage4_candidates_relu.json", STAGE4_CANDIDATES, "--horizons=100 --activation=relu"
  ),
  _seeds_command(
    "mnist_stage4_candidates_tanh.json", STAGE4_CANDIDATES, "--horizons=100 --activation=tanh"
  ),
)


# Random objective scaling (Lv et al. 2017) as a stage after the shipped recipe: its epoch 4
# (validation never beat its start, so best/ is the start; the checkpoint is exported).
RANDOM_SCALE_RUNS = ("netmix200", "rs200/epoch4")
RANDOM_SCALE_COLUMNS = (  # (column, result file, step)
  ("step 100", "results/mnist_random_scale.json", "100"),
  ("step 200", "results/mnist_random_scale.json", "200"),
  ("ReLU, step 100", "results/mnist_random_scale_relu.json", "100"),
  ("tanh (held out), step 100", "results/mnist_random_scale_tanh.json", "100"),
)
RANDOM_SCALE_COMMANDS = (
  "python scripts/export.py --optimizer_path=results/training/rs200 --checkpoint=latest "
  "--output_path=results/training/rs200/epoch4",
  _seeds_command("mnist_random_scale.json", RANDOM_SCALE_RUNS),
  _seeds_command(
    "mnist_random_scale_relu.json", RANDOM_SCALE_RUNS, "--horizons=100 --activation=relu"
  ),
  _seeds_command(
    "mnist_random_scale_tanh.json", RANDOM_SCALE_RUNS, "--horizons=100 --activation=tanh"
  ),
)


def _cifar_panel(key, title):
  return Panel(
    key,
    title,
    f"results/{key}.json",
    _evaluate_command(
      f"--problem={key} --dataset_source=binary --data_dir=CIFAR_DIR "
      "--optimizer_path=savedmodels/cifar10",
      key,
      " --num_steps=1000",
    ),
    evaluation_rows,
    figure=f"docs/figures/{key}.png",
    paper_step="~1000",
    note="Needs CIFAR-10's binary files and a meta-trained savedmodels/cifar10.",
  )


def _convnet_command(run, key):
  """scripts/evaluate.py of results/convnet_training/RUN/best on t10k, baselines tuned on 4
  validation problems (SGD left out)."""
  return _evaluate_command(
    f"--problem=mnist_convnet --optimizer_path=results/convnet_training/{run}/best "
    f"{MNIST_FULL} --num_problems=20 --num_tuning_problems=4 "
    "--optimizers=learned,adam,nag,rmsprop",
    key,
  )


def _neural_art_panel(key, title, extra_flags):
  return Panel(
    key,
    title,
    f"results/{key}.json",
    _evaluate_command(
      "--problem=neural_art --optimizer_path=savedmodels/neural_art"
      f"{extra_flags} --num_problems=20 --num_tuning_problems=2 --num_steps=128",
      key,
    ),
    evaluation_rows,
    figure=f"docs/figures/{key}.png",
    more_figures=(f"docs/figures/{key}_images.png",),
    note="savedmodels/neural_art (stage 4 of the neural-art meta-training table: meta-trained "
    "on 64x64 crops, style gravel) on 20 held-out content crops, random-filter features; "
    "baselines tuned on 2 other crops. The paper's Figure 8 has curves only (no values in "
    "PAPER.md's table).",
  )


# The neural-art settings of the paper's Figure 8: (result-file suffix, title, evaluate flags).
NEURAL_ART_SETTINGS = (
  ("64", "64x64", ""),
  ("128", "128x128", " --image_size=128"),
  ("second_style", "second style (brick)", " --style=brick"),
)
# Stage 2, the shipped stage 4 (grown from it), stage 4 at meta lr 1e-3, stage 4 with seeds 2, 3.
NEURAL_ART_GROWTH_RUNS = ("stage2", "stage4", "stage4_lr001", "stage4_s2", "stage4_s3")
NEURAL_ART_GROWTH_COLUMNS = tuple(
  (title, f"results/neural_art_growth_{suffix}.json", "128")
  for suffix, title, _ in NEURAL_ART_SETTINGS
)
NEURAL_ART_GROWTH_COMMANDS = tuple(
  _seeds_command(
    f"neural_art_growth_{suffix}.json",
    NEURAL_ART_GROWTH_RUNS,
    "--horizons=128",
    f"--problem=neural_art{flags}",
    "results/neural_art_training",
  )
  for suffix, _, flags in NEURAL_ART_SETTINGS
)


def _neural_art_candidate_panel(suffix, title, extra_flags):
  """Stage 2, the best neural-art optimizer before growth (not shipped), against tuned
  baselines on 8 held-out crops."""
  key = f"neural_art_candidate_{suffix}"
  return Panel(
    key,
    f"Neural Art, {title}: stage 2, before growth (not shipped)",
    f"results/{key}.json",
    _evaluate_command(
      "--problem=neural_art --optimizer_path=results/neural_art_training/stage2/best"
      f"{extra_flags} --num_problems=8 --num_tuning_problems=2 --num_steps=128",
      key,
    ),
    evaluation_rows,
    figure=f"docs/figures/{key}.png",
    more_figures=(f"docs/figures/{key}_images.png",),
    note="Stage 2 of the neural-art meta-training table (meta-trained on 64x64 crops, style "
    "gravel; the best optimizer before growth into rnnprop) on 8 held-out content crops, "
    "random-filter features; baselines tuned on 2 other crops.",
  )


PANELS = (
  Panel(
    "quadratic",
    "Quadratics",
    "results/quadratic.json",
    _evaluate_command("--optimizer_path=savedmodels/quadratic --num_problems=100", "quadratic"),
    evaluation_rows,
    figure="docs/figures/quadratic.png",
    paper_step="100",
    note="10-d quadratics ||W theta - y||^2; the same held-out problems for every optimizer.",
  ),
  _mnist_panel("mnist", "MNIST", 100),
  _mnist_panel("mnist_200_steps", "MNIST, step 200", 200),
  _sensitivity_panel("mnist_step_size", "MNIST, step-size sensitivity", "mnist_paper_setting.json"),
  _generalization_panel("mnist_40_units", "MNIST, 40 hidden units", "40 units"),
  _generalization_panel("mnist_2_layers", "MNIST, 2 hidden layers", "2 layers"),
  _generalization_panel("mnist_relu", "MNIST, ReLU", "relu"),
  _generalization_panel("mnist_tanh", "MNIST, tanh", "tanh"),
  _generalization_panel("mnist_3_layers", "MNIST, 3 hidden layers", "3 layers"),
  _generalization_panel("mnist_80_units", "MNIST, 80 hidden units", "80 units"),
  _sensitivity_panel(
    "mnist_relu_step_size",
    "MNIST, ReLU: step-size sensitivity",
    "mnist_relu_sensitivity.json",
    " --activation=relu --horizons=100 --scales=0.5,1",
  ),
  _sensitivity_panel(
    "mnist_tanh_step_size",
    "MNIST, tanh: step-size sensitivity",
    "mnist_tanh_sensitivity.json",
    " --activation=tanh --horizons=100 --scales=0.5,1",
  ),
  Panel(
    "mnist_1000_steps",
    "MNIST, 1,000 steps (10x the training horizon)",
    "results/mnist_1000_steps.json",
    _evaluate_command(
      f"--problem=mnist --optimizer_path=savedmodels/mnist {MNIST_FULL} "
      "--num_problems=20 --optimizers=learned,adam,nag",
      "mnist_1000_steps",
      " --num_steps=1000",
    ),
    evaluation_rows,
    figure="docs/figures/mnist_1000_steps.png",
    note="The 784-20-10 MLP trained for 1,000 steps; baselines tuned for step 1,000.",
  ),
  Panel(
    "keras_step_time",
    "Keras model.fit step time of every learned optimizer beside Adam's",
    "results/keras_step_time.json",
    "python benchmarks/keras_step_time.py --output_json=results/keras_step_time.json",
    keras_step_rows,
    columns=KERAS_STEP_COLUMNS,
    summarize=False,
    order=lambda r: (r["jit"], r.get("over_adam_step_time") or float("inf")),
    note="The 784-20-10 MLP (15,910 parameters), batch 128, each optimizer with the paper's "
    "MNIST settings and random weights (its cost does not depend on them); medians of "
    "per-batch wall and process CPU times inside model.fit, timed in alternating rounds.",
  ),
  Panel(
    "keras_mnist_fit",
    "MNIST in Keras model.fit (one epoch, 469 steps)",
    "results/keras_mnist_fit.json",
    f"python benchmarks/keras_mnist_fit.py --optimizer_path=savedmodels/mnist {MNIST_FULL} "
    "--output_json=results/keras_mnist_fit.json",
    keras_fit_rows,
    note="784-20-10 sigmoid MLP with Keras's default initializers, batch 128, full MNIST; "
    "mean loss is the training loss over the last 50 steps, over 3 seeds. Adam's "
    "tuned rate was picked on seed 0's training loss (favours Adam).",
  ),
  _seeds_panel(
    "mnist_seeds",
    "MNIST, meta-training seeds of the shipped recipe (all six stages)",
    "mnist_seeds.json",
    ("g200", "g200_s1", "g200_s2"),
    "savedmodels/mnist (seed 0: g200) and stages 2-6 rerun with --seed=1 and --seed=2 "
    "(stage 1, savedmodels/mnist_sample, shared)",
  ),
  _seeds_panel(
    "mnist_seeds_stage5",
    "MNIST, meta-training seeds of stages 1-5 of the shipped recipe",
    "mnist_seeds_stage5.json",
    ("netmix200", "netmix200_s1", "netmix200_s2"),
    "the optimizer after stage 5 of the six (seed 0: netmix200, shipped before stage 6 was "
    "added) and stages 2-5 rerun with --seed=1 and --seed=2",
  ),
  _seeds_panel(
    "mnist_seeds_stage3",
    "MNIST, meta-training seeds of stages 1-3 of the shipped recipe",
    "mnist_seeds_stage3.json",
    ("ft200", "ship_s1_stage3", "ship_s2_stage3"),
    "the optimizer after stage 3 of the five (seed 0: ft200), and stages 2 and 3 rerun with "
    "--seed=1 and --seed=2",
  ),
  _runs_by_column_panel(
    "mnist_stage4_candidates",
    "MNIST, candidates for stage 4 of the shipped recipe",
    STAGE4_COLUMNS,
    STAGE4_COMMANDS,
    "Each run's best optimizer (results/training/RUN/best; its recipe is in the training "
    "table) on the same 20 t10k runs as the MNIST panels, whose tuned baselines apply: the "
    "784-20-10 sigmoid MLP, then its 2-layer, ReLU and tanh variants. The network mix of "
    "netmix and netmix200 has 2 layers and ReLU; no run was meta-trained on tanh. "
    "s200_lowlr ran on the sigmoid MLP only.",
  ),
  _runs_by_column_panel(
    "mnist_stage6_candidate",
    "MNIST, a 1,000-step stage after stage 5",
    tuple(
      (f"step {step}", "results/mnist_stage6_candidate.json", step)
      for step in ("100", "200", "1000")
    ),
    (
      _seeds_command(
        "mnist_stage6_candidate.json", ("netmix200", "long1000"), "--horizons=100,200,1000"
      ),
    ),
    "Stage 5 (netmix200) and long1000, fine-tuned from it on 1,000-step "
    "trajectories, on the same 20 t10k runs as the MNIST panels; tuned baselines at step "
    "1,000: the 1,000-step panel.",
  ),
  _runs_by_column_panel(
    "mnist_growth",
    "MNIST, growth into rnnprop (stage 6 of the shipped recipe)",
    tuple((f"step {step}", "results/mnist_growth.json", step) for step in ("100", "200", "1000")),
    (
      _seeds_command(
        "mnist_growth.json", ("netmix200", "g200", "g1000"), "--horizons=100,200,1000"
      ),
    ),
    "Stage 5 (netmix200) and, grown from it into an rnnprop cell that also reads the "
    "Adam-normalised gradient and momenta (train.py --grow_from; the new inputs start at zero "
    "weight), g200 (the same four networks, 200 untruncated steps, meta learning rate 0.0003: "
    "stage 6, shipped) and g1000 (1,000-step trajectories in unrolls of 200, 10 per epoch; "
    "stopped after 3 of 12 epochs, best at epoch 1), on the same 20 t10k runs as the MNIST "
    "panels, whose tuned baselines apply (step 1,000: the 1,000-step panel).",
  ),
  _runs_by_column_panel(
    "mnist_random_scale",
    "MNIST, random objective scaling after stage 5",
    RANDOM_SCALE_COLUMNS,
    RANDOM_SCALE_COMMANDS,
    "Stage 5 (netmix200) and rs200 (from it: the same four networks and 200 "
    "untruncated steps, with --random_scale=10 and meta learning rate 0.0003; stopped after 4 "
    "of 12 epochs, its validation worse than its start each epoch: the training table), "
    "on the same 20 t10k runs as the MNIST panels, whose tuned baselines apply.",
  ),
  _runs_by_column_panel(
    "mnist_imitation",
    "MNIST, imitation of tuned NAG as warm start",
    tuple((f"step {step}", "results/mnist_imitation.json", step) for step in ("100", "200")),
    (_seeds_command("mnist_imitation.json", ("lstm_curr9_s0", "imit_curr9_s0")),),
    "lstm_curr9_s0 and imit_curr9_s0: the same command from scratch, the second with "
    "--imitate=nag:1 --imitation_trajectories=20 first (Chen et al. 2020; the training "
    "table), on the same 20 t10k runs as the MNIST panels.",
  ),
  _runs_by_column_panel(
    "mnist_sharing_vs_lstm",
    "MNIST, LSTM+GAC and NTM-L-BFGS against the LSTM (same command, seed and budget)",
    tuple((f"step {step}", "results/mnist_sharing_vs_lstm.json", step) for step in ("100", "200")),
    (
      _seeds_command("mnist_sharing_vs_lstm.json", ("lstm_curr9_s0", "gac_curr_s0", "ntm_curr_s0")),
    ),
    "lstm_curr9_s0 (LSTM), gac_curr_s0 (LSTM+GAC) and ntm_curr_s0 (NTM-L-BFGS), each "
    "meta-trained from scratch by the same command but for --optimizer (the training table), "
    "on the same 20 t10k runs as the MNIST panels.",
  ),
  Panel(
    "mnist_meta_training",
    "MNIST meta-training runs (full MNIST train split)",
    "results/training",
    "python scripts/train.py --problem=mnist " + MNIST_FULL + " --output_dir=runs/NAME ... "
    "(each run's full command is in results/training/NAME/run.json)",
    training_rows,
    columns=TRAINING_COLUMNS,
    note="Each run directory as scripts/train.py left it (run.json, history.json, "
    "checkpoints: resumable). Validation: 16 problems of the held-out 10% of the "
    "train split, mean loss over the last 20 steps of 100 (of 200 for runs with "
    "--num_steps=200). Tuned "
    "baselines on the same problems: `python benchmarks/validation_baselines.py "
    "--problem=mnist " + MNIST_FULL + " --horizons=100,200`.",
  ),
  _cifar_panel("cifar10", "CIFAR-10"),
  _cifar_panel("cifar2", "CIFAR-2"),
  Panel(
    "mnist_convnet",
    "Two-network convnet on MNIST digits (substitute for the paper's CIFAR panels)",
    "results/mnist_convnet.json",
    _convnet_command("mconv_s0", "mnist_convnet"),
    evaluation_rows,
    figure="docs/figures/mnist_convnet.png",
    note="The CIFAR convnet (conv and fully connected parameters stepped by two optimizer "
    "networks) on full MNIST (t10k digits), 100 steps. The optimizer is "
    "results/convnet_training/mconv_s0 after 6 of its 20 epochs (unrolls of 20, "
    "120 trajectories); baselines tuned on 4 validation problems; SGD not run.",
  ),
  Panel(
    "mnist_convnet_grown",
    "Two-network convnet on MNIST digits, grown into rnnprop",
    "results/mnist_convnet_grown.json",
    _convnet_command("mconv_g", "mnist_convnet_grown"),
    evaluation_rows,
    figure="docs/figures/mnist_convnet_grown.png",
    note="As the panel above, with results/convnet_training/mconv_g: mconv_s0's two networks "
    "grown into rnnprop cells (train.py --grow_from; new Adam-normalised inputs at zero "
    "weight), then mconv_s0's recipe at meta learning rate 0.0003 for 8 epochs (best at "
    "epoch 3). Same test runs and tuning as the panel above; the baselines were re-run "
    "and agree with it except Adam (0.07217 here, 0.07427 there, at the same learning rate; "
    "cause not established: the runs differed in TensorFlow thread settings).",
  ),
  Panel(
    "convnet_meta_training",
    "Two-network convnet meta-training runs",
    "results/convnet_training",
    "python scripts/train.py --problem=mnist_convnet --output_dir=runs/NAME ... "
    "(each run's full command is in results/convnet_training/NAME/run.json)",
    training_rows,
    columns=TRAINING_COLUMNS,
    summarize=False,
    note="Full MNIST digits, the CIFAR convnet, 100 steps in unrolls of 20. mconv_s0 from "
    "scratch (stopped after 6 of 20 epochs); mconv_g grows mconv_s0's best into rnnprop "
    "cells. Validation: the same 8 problems for both runs.",
  ),
  Panel(
    "neural_art_meta_training",
    "Neural Art meta-training runs",
    "results/neural_art_training",
    "python scripts/train.py --problem=neural_art --output_dir=runs/NAME ... "
    "(each run's full command is in results/neural_art_training/NAME/run.json)",
    training_rows,
    columns=TRAINING_COLUMNS,
    summarize=False,
    note="Style gravel, 64x64 crops, random-filter features (no VGG19 weights here), 128 "
    "steps. stage1 fine-tunes savedmodels/mnist as it was then (the optimizer after stage 3 "
    "of the MNIST recipe); stage2 starts from stage1 (recorded under its earlier path "
    "results/training/neural_art_stage1), stage3 (untruncated 128-step unrolls; not used) "
    "from stage2. stage4 grows stage2 into an rnnprop cell that also reads the "
    "Adam-normalised gradient and momenta (train.py --grow_from; shipped as "
    "savedmodels/neural_art); stage4_lr001 is the same at meta learning rate 0.001, "
    "stage4_s2 and stage4_s3 with --seed=2 and 3 (stopped after 8 of 16 epochs). "
    "Validation: 4 (stage1) or 8 problems, the same for every run (the trainer's fixed "
    "validation seed), mean loss over the last unroll (steps 97-128; stage3's unroll is all "
    "128 steps, so its values are not comparable).",
  ),
  _runs_by_column_panel(
    "neural_art_growth",
    "Neural Art, growth into rnnprop and meta-training seeds",
    NEURAL_ART_GROWTH_COLUMNS,
    NEURAL_ART_GROWTH_COMMANDS,
    "Loss at step 128 of each run's best optimizer (results/neural_art_training/RUN/best) on "
    "the same 20 held-out runs as the Neural Art panels, whose tuned baselines apply: stage2 "
    "(before growth, the candidate of earlier sessions), stage4 (shipped: stage2 grown into "
    "rnnprop, seed 1), stage4_lr001 (meta learning rate 0.001) and stage4_s2, stage4_s3 "
    "(stage 4 rerun with --seed=2 and 3 from the same stage2; stages 1 and 2 were run once).",
  ),
  *(_neural_art_candidate_panel(*setting) for setting in NEURAL_ART_SETTINGS),
  *(
    _neural_art_panel(f"neural_art_{suffix}", f"Neural Art, {title}", flags)
    for suffix, title, flags in NEURAL_ART_SETTINGS
    + (("third_style", "third style (grass)", " --style=grass"),)
  ),
  Panel(
    "sharing_quadratic",
    "Optimizers that share information (quadratics)",
    "results/sharing_quadratic.json",
    "python benchmarks/sharing_quadratic.py --output_dir=runs/sharing --epochs=16 "
    "--seeds=0,1,2,3,4 && cp runs/sharing/results.json results/sharing_quadratic.json "
    "&& cp runs/sharing/loss.png docs/figures/sharing_quadratic.png",
    sharing_rows,
    figure="docs/figures/sharing_quadratic.png",
    note="Every optimizer meta-trained with the same budget once per seed; the paper's "
    "Figure 4 (right) has curves only. Runs: seeds x held-out problems.",
  ),
  Panel(
    "speed",
    "Speed (meta-training throughput)",
    "results/throughput.json",
    "python benchmarks/throughput.py --lstm_kernels=graph,native "
    "--output_json=results/throughput.json",
    throughput_rows,
    columns=SPEED_COLUMNS,
    note="One unroll of the coordinatewise LSTM, forward and backward. LSTM kernel: graph "
    "(TensorFlow ops) or native (the CPU custom ops of l2l_tf/kernels, `--lstm_kernel=native`; "
    "no XLA).",
  ),
  Panel(
    "meta_training_memory",
    "Memory of one meta-gradient",
    "results/meta_training_memory.json",
    "python benchmarks/meta_training_memory.py --lstm_kernels=graph,native "
    "--output_json=results/meta_training_memory.json",
    memory_rows,
    columns=MEMORY_COLUMNS,
    order=lambda r: (r["problem"], r["unroll"], r["lstm_kernel"], r["recompute"]),
    note="Peak resident memory of one meta-gradient (one truncated unroll of the paper's LSTM, "
    "forward and backward) on the MNIST MLP (mnist) and a 784-1260-10 MLP of about a million "
    "parameters (large), each configuration in its own process, one at a time. Above setup: "
    "the peak minus the process's peak before the meta-gradient ran (TensorFlow, data, "
    "problem). recompute: none stores every step's intermediates; steps and blocks recompute "
    "them in the backward pass (`--recompute`). The native LSTM kernel keeps only each step's "
    "new state. Seconds: median of the timed meta-gradients after the first.",
  ),
  Panel(
    "peer_speed",
    "Speed beside the PyTorch and JAX peers",
    "results/peer_speed.json",
    "python benchmarks/peer_speed.py --peers_dir=../shared/peers --torch_python=VENV/bin/python "
    "--jax_python=VENV/bin/python --output_json=results/peer_speed.json",
    peer_speed_rows,
    columns=PEER_SPEED_COLUMNS,
    order=lambda r: -r["coord_steps_per_s"],  # fastest first
    note="One meta-training iteration of the same coordinatewise LSTM (a 20-step unroll, its "
    "backward pass, one Adam step) in each implementation, each in a fresh process, one "
    "after another; l2l_tf is timed by benchmarks/throughput.py, its best configuration "
    "counting (l2l_tf_configurations in the result file; the native LSTM kernel since "
    "`--lstm_kernel=native` exists). Last column: l2l_tf's "
    "throughput over this one's (below 1: l2l_tf is slower). One run: a shared machine "
    "slows the peers more than l2l_tf.",
  ),
)


def load_result(root, panel):
  """The panel's result file as JSON ({path: JSON} for a panel of several files), or None when
  one does not exist."""
  if not panel.more_files:
    return _load_path(root, panel.result_file)
  files = {file: _load_path(root, file) for file in panel.files}
  return None if None in files.values() else files


def _load_path(root, result_file):
  """One result file (or directory of training runs) as JSON, or None when it does not exist."""
  path = os.path.join(root, result_file)
  if not os.path.exists(path):
    return None
  if os.path.isdir(path):  # training run directories (run.json + history.json each)
    runs = {}
    for name in sorted(os.listdir(path)):
      files = {key: os.path.join(path, name, f"{key}.json") for key in ("run", "history")}
      if all(os.path.isfile(f) for f in files.values()):
        runs[name] = {}
        for key, file in files.items():
          try:
            with open(file) as f:
              runs[name][key] = json.load(f)
          except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ResultFileError(f"{os.path.relpath(file, root)}: not valid JSON ({e})") from None
    return runs
  try:
    with open(path) as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ResultFileError(f"{result_file}: not valid JSON ({e})") from None


@contextlib.contextmanager
def blaming(panel):
  """Turns a result file's unexpected shape (a missing key, a string for a number, ...) into
  one ResultFileError naming the file."""
  try:
    yield
  except ResultFileError:
    raise
  except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, AttributeError) as e:
    raise ResultFileError(
      f"{panel.result_file}: not the JSON {panel.title} expects ({type(e).__name__}: {e})"
    ) from None


def panel_rows(panel, data):
  """The panel's table rows, best mean first, with the paper's values."""
  rows = panel.rows(data)
  paper = PAPER.get(panel.key, {})
  for row in rows:
    if "optimizer" in row:
      row["paper"] = paper.get(row["optimizer"])
  if panel.columns is LOSS_COLUMNS:  # learned optimizers first, then by mean loss
    return sorted(
      rows, key=lambda r: (r["learning_rate"] is not None, _sort_key(r["mean"]), optimizer_label(r))
    )
  return sorted(rows, key=panel.order or (lambda r: (r["problem"], str(r["jit_compile"]))))


def _sort_key(x):
  return math.inf if x is None or math.isnan(x) else x


def markdown_table(columns, rows):
  lines = ["| " + " | ".join(header for header, _ in columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(row) for _, cell in columns) + " |" for row in rows]
  if any(row.get("detail") for row in rows):
    lines += [""] + [
      f"- {optimizer_label(row)}: {row['detail']}" for row in rows if row.get("detail")
    ]
  return lines


def format_provenance(provenance):
  """The lines saying which command made a result file, how long it took, where and when."""
  if not provenance:
    return ["Command, wall time and machine: not recorded in the result file."]
  machine = provenance.get("machine") or {}
  where = f"{machine.get('cpu_count', '?')}-core CPU ({machine.get('platform', '?')})"
  if machine.get("load_average_1min") is not None:
    where += f", 1-minute load {machine['load_average_1min']:.1f} when it finished"
  if machine.get("tensorflow"):
    where += f", TensorFlow {machine['tensorflow']}"
  return [
    f"Command: `{provenance.get('command', '?')}`",
    "",
    f"Wall time {evaluation.format_duration(provenance.get('wall_seconds', math.nan))}"
    f" on a {where}; {provenance.get('date_utc', 'date not recorded')}.",
  ]


def _file_list(files):
  return ", ".join(f"`{file}`" for file in files)


def provenance_lines(panel, data):
  """format_provenance of the panel's result file, or of each of its files."""
  if not panel.more_files:
    return format_provenance(data.get("provenance"))
  lines = []
  for file in panel.files:
    lines += [f"`{file}`:", ""] + format_provenance(data[file].get("provenance")) + [""]
  return lines[:-1]


def panel_section(root, output_dir, panel, data):
  lines = [f"## {panel.title}", ""]
  if panel.note:
    lines += [panel.note, ""]
  if data is None:
    missing = [f for f in panel.files if not os.path.exists(os.path.join(root, f))]
    are = "is" if len(missing) == 1 else "are"
    written = "it is" if len(panel.files) == 1 else "the panel's files are"
    return lines + [
      f"**Not run yet.** {_file_list(missing)} {are} missing; {written} written by:",
      "",
      f"```sh\n{panel.command}\n```",
      "",
    ]
  step = f"; the paper's values at step {panel.paper_step}" if panel.paper_step else ""
  lines += [f"From {_file_list(panel.files)}{step}.", ""]
  features = (data.get("problem_config") or {}).get("feature_network_description")
  if features:  # neural art: say which feature network ran
    lines += [f"Features: {features}", ""]
  rows = panel_rows(panel, data)
  lines += markdown_table(panel.columns, rows) + [""]
  if panel.columns is LOSS_COLUMNS:
    lines += paired_difference_line(rows)
  figures = [(panel.title, panel.figure)]
  figures += [
    (f"{panel.title}, figure {i + 2}", figure) for i, figure in enumerate(panel.more_figures)
  ]
  for alt, figure in figures:
    if figure and os.path.exists(os.path.join(root, figure)):
      link = os.path.relpath(os.path.join(root, figure), output_dir)
      lines += [f"![{alt}]({link})", ""]
  return lines + provenance_lines(panel, data) + [""]


def summary_row(panel, data):
  """Index line: our learned optimizer and best tuned baseline beside the paper's."""
  if data is None:
    return f"| [{panel.title}](#{panel.key}) | not run yet | | | | |"
  if panel.columns is not LOSS_COLUMNS or not panel.summarize:
    return f"| [{panel.title}](#{panel.key}) | see below | | | | |"
  rows = panel_rows(panel, data)
  learned = [r for r in rows if r["learning_rate"] is None]
  baselines = [r for r in rows if r["learning_rate"] is not None]
  best = baselines[0] if baselines else None
  paper = PAPER.get(panel.key, {})
  paper_best = min((v for k, v in paper.items() if k != "learned"), default=None)
  ours = f"{optimizer_label(learned[0])} {format_number(learned[0]['mean'])}" if learned else "-"
  theirs = f"{optimizer_label(best)} {format_number(best['mean'])}" if best else "-"
  wins = "-" if not (learned and best) else verdict(rows, learned[0], best)
  return (
    f"| [{panel.title}](#{panel.key}) | {ours} | {theirs} | {wins} | "
    f"{format_number(paper.get('learned'))} | {format_number(paper_best)} |"
  )


def render(root):
  """The page's text for the result files under root."""
  output_dir = os.path.dirname(os.path.join(root, OUTPUT))
  loaded = [(panel, load_result(root, panel)) for panel in PANELS]
  lines = [
    "# Results",
    "",
    f"Generated by `{REGENERATE}` from the result files in `{RESULTS_DIR}/`; do not "
    "edit by hand. Each table is one experiment command's output file, unchanged; the "
    "paper's values are read off its figures (about +-10%). Mean and std are over the "
    "held-out runs (the same runs for every optimizer); baselines' learning rates are "
    f"tuned on validation runs. `{REGENERATE} --check` fails when this page is stale.",
    "",
    "| panel | learned (mean) | best tuned baseline | learned best? | paper: LSTM "
    "| paper: best baseline |",
    "|---|---|---|---|---|---|",
  ]
  summary, sections = [], []
  for panel, data in loaded:
    with blaming(panel):
      summary.append(summary_row(panel, data))
      sections += [f'<a id="{panel.key}"></a>', ""] + panel_section(root, output_dir, panel, data)
  lines += summary + [""] + sections
  return "\n".join(lines).rstrip("\n") + "\n"


def write_page(root):
  """Writes ROOT/docs/RESULTS.md atomically (nothing is written if a result file is bad)."""
  text = render(root)
  atomic_files.atomic_write(os.path.join(root, OUTPUT), text)


def page_is_current(root):
  """Whether ROOT/docs/RESULTS.md exists and is exactly what the result files generate."""
  try:
    with open(os.path.join(root, OUTPUT), newline="") as f:  # byte for byte: keep \r
      return f.read() == render(root)
  except FileNotFoundError:
    return False


def main(argv):
  del argv
  if not FLAGS.check:
    write_page(FLAGS.root)
    print(f"wrote {OUTPUT}")
  elif page_is_current(FLAGS.root):
    print(f"{OUTPUT} is up to date")
  else:
    sys.exit(f"error: {OUTPUT} is stale or missing: run {REGENERATE}")


if __name__ == "__main__":
  cli.run(main)
