"""Quality of the information-sharing optimizers on the 10-dimensional quadratics (Figure 4, right).

Meta-trains the coordinatewise LSTM, LSTM+GAC and NTM-BFGS with the SAME budget (same
MetaTrainingConfig: epochs, trajectories, meta learning rate, training seeds and batch), keeps
each one's best optimizer by validation loss, and runs all of them (plus Adam with its learning
rate tuned on validation problems, for reference) on the same held-out test problems.

Meta-training at this budget is noisy: the same optimizer's test loss moves by 30% from one
meta-training seed to the next, as much as the differences between optimizers. So every
optimizer is meta-trained once per seed in --seeds (each seed: the same initial-weight seed
and training problems for every optimizer), and the verdict is on the mean over seeds.

    python benchmarks/sharing_quadratic.py --output_dir=/tmp/sharing_quadratic --seeds=0,1,2

Writes into --output_dir: one meta-training run per seed and optimizer (seed_<s>/<name>/,
resumable), results.json (per seed: the evaluation JSON; overall: means over seeds; the budget
and meta-training times), loss.png (mean over seeds), and prints per-seed and overall tables of
the mean loss at step --num_steps with each optimizer's ratio to the LSTM.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses

from absl import flags
import keras
import numpy as np

from l2l_tf import cli
from l2l_tf import evaluation
from l2l_tf import learned_rule
from l2l_tf import optimizer_format
from l2l_tf import registry
from l2l_tf.problems.quadratic import QuadraticProblem
from l2l_tf.training.meta_trainer import MetaTrainer
from l2l_tf.training.meta_trainer import MetaTrainingConfig

_OUTPUT = flags.DEFINE_string("output_dir", "/tmp/l2l_sharing_quadratic", "Runs and results.")
_OPTIMIZERS = flags.DEFINE_list(
  "optimizers", ["lstm", "lstm_gac", "ntm_bfgs"], "Learned optimizers to compare (registry names)."
)
_EPOCHS = flags.DEFINE_integer("epochs", 8, "Meta-training epochs (same for every optimizer).")
_TRAJECTORIES = flags.DEFINE_integer("trajectories_per_epoch", 25, "Trajectories per epoch.")
_BATCH = flags.DEFINE_integer("train_batch_size", 128, "Quadratics per training trajectory.")
_META_LR = flags.DEFINE_float("meta_learning_rate", 0.003, "Adam learning rate (meta).")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 100, "Optimizee steps (T) and evaluation step.")
_UNROLL = flags.DEFINE_integer("unroll_length", 20, "Truncation length.")
_VALIDATION = flags.DEFINE_integer("num_validation_problems", 128, "Early-stopping problems.")
_TEST = flags.DEFINE_integer("num_test_problems", 256, "Held-out test problems (>= 100).")
_TEST_SEED = flags.DEFINE_integer("test_seed", 20_160_614, "Seed of the held-out problems.")
_SEEDS = flags.DEFINE_list(
  "seeds",
  ["0"],
  "Meta-training seeds; each optimizer is trained once per seed (same seeds for every optimizer).",
)
_BASELINES = flags.DEFINE_list("baselines", ["adam"], "Tuned hand-designed baselines to add.")


def _meta_train(name, seed, config, train_problem, validation_problem):
  keras.utils.set_random_seed(seed)  # reproducible initial weights
  rule = learned_rule.LearnedUpdateRule(registry.make_cell(name, "quadratic"))
  run_dir = os.path.join(_OUTPUT.value, f"seed_{seed}", name)
  print(
    f"== meta-training {name}, seed {seed} "
    f"({sum(int(np.prod(v.shape)) for v in rule.trainable_variables)} weights)",
    flush=True,
  )
  history = MetaTrainer(
    rule,
    train_problem,
    validation_problem,
    dataclasses.replace(config, seed=seed),
    metadata={"optimizer": name},
    log=lambda line: print(f"[{name} {seed}] {line}", flush=True),
  ).train(run_dir)
  best, metadata = optimizer_format.load_rule(os.path.join(run_dir, "best"))
  return best, {
    "meta_training_seconds": sum(h["epoch_seconds"] for h in history),
    "best_validation_loss": metadata.get("best_validation_loss"),
    "best_epoch": metadata.get("epoch"),
    "history": history,
  }


def _print_table(title, rows):
  print(title)
  print(
    f"{'optimizer':<10} {'mean':>10} {'median':>10} {'vs lstm':>8} {'better':>7} "
    f"{'train s':>8} {'best ep':>7}"
  )
  for name, r in sorted(rows.items(), key=lambda kv: kv[1]["final_loss_mean"]):
    ratio = "-" if r.get("ratio_to_lstm") is None else f"{r['ratio_to_lstm']:.3f}"
    better = (
      "-"
      if r.get("fraction_of_problems_better_than_lstm") is None
      else f"{100 * r['fraction_of_problems_better_than_lstm']:.0f}%"
    )
    print(
      f"{name:<10} {r['final_loss_mean']:>10.4g} {r['final_loss_median']:>10.4g} "
      f"{ratio:>8} {better:>7} {r.get('train_s', '-'):>8} {r.get('best_epoch', '-'):>7}"
    )


def _summarize(losses, reference, extra=None):
  """Final-step statistics of raw losses [T + 1, problems] (pooled over seeds if stacked)."""
  final = losses[-1]
  row = {"final_loss_mean": float(np.mean(final)), "final_loss_median": float(np.median(final))}
  if reference is not None:
    row["ratio_to_lstm"] = row["final_loss_mean"] / float(np.mean(reference[-1]))
    row["fraction_of_problems_better_than_lstm"] = float(np.mean(final < reference[-1]))
  row.update(extra or {})
  return row


def main(argv):
  del argv
  if _TEST.value < 100:
    raise ValueError("--num_test_problems must be >= 100")
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError as e:
    raise ValueError(f"--seeds must be integers: {e}") from e
  if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
    raise ValueError(f"--seeds must be distinct non-negative integers, got {_SEEDS.value}")
  config = MetaTrainingConfig(
    num_steps=_NUM_STEPS.value,
    unroll_length=_UNROLL.value,
    epochs=_EPOCHS.value,
    trajectories_per_epoch=_TRAJECTORIES.value,
    meta_learning_rate=_META_LR.value,
    second_derivatives=False,
    jit_compile="auto",
    log_every=_TRAJECTORIES.value,
  )
  config.validate()
  train_problem = QuadraticProblem(batch_size=_BATCH.value)
  validation_problem = QuadraticProblem(batch_size=_VALIDATION.value)
  test_problem = QuadraticProblem(batch_size=_TEST.value)
  names = list(_OPTIMIZERS.value)
  per_seed, seed_losses, meta = {}, {name: [] for name in names}, {}
  baseline_losses = None
  for seed in seeds:
    rules = {}
    for name in names:
      rules[name], meta[f"{name}@{seed}"] = _meta_train(
        name, seed, config, train_problem, validation_problem
      )
    results, losses = evaluation.compare(
      test_problem,
      rules,
      seed=_TEST_SEED.value,
      num_steps=_NUM_STEPS.value,
      baselines=tuple(_BASELINES.value) if baseline_losses is None else (),
      tuning_problem=validation_problem,
      tuning_seed=1,
      log=print,
    )
    if baseline_losses is None:
      baseline_losses = {b: losses[b] for b in _BASELINES.value}
      baseline_results = {b: results["results"][b] for b in _BASELINES.value}
    rows = {}
    for name in names:
      seed_losses[name].append(losses[name])
      rows[name] = _summarize(
        losses[name],
        None if name == "lstm" else losses.get("lstm"),
        {
          "train_s": f"{meta[f'{name}@{seed}']['meta_training_seconds']:.0f}",
          "best_epoch": str(meta[f"{name}@{seed}"]["best_epoch"]),
        },
      )
    for b, b_losses in baseline_losses.items():
      rows[b] = _summarize(b_losses, losses.get("lstm"))
    per_seed[seed] = {"evaluation": results, "table": rows}
    print()
    _print_table(
      f"Seed {seed}: mean loss at step {_NUM_STEPS.value} on {_TEST.value} held-out "
      "10-d quadratics",
      rows,
    )

  # Each optimizer's losses of all seeds side by side: [T + 1, seeds x problems].
  pooled = {name: np.concatenate(seed_losses[name], axis=1) for name in names}
  lstm = pooled.get("lstm")
  overall = {}
  for name in names:
    finals = [float(np.mean(losses[-1])) for losses in seed_losses[name]]
    row = _summarize(pooled[name], None if name == "lstm" else lstm)
    row.update(final_loss_mean_per_seed=finals, mean_loss=pooled[name].mean(axis=1).tolist())
    if "lstm" in names and name != "lstm":
      row["seeds_with_lower_mean_than_lstm"] = sum(
        f < float(np.mean(losses[-1])) for f, losses in zip(finals, seed_losses["lstm"])
      )
    overall[name] = row
  for b, b_losses in baseline_losses.items():
    # The baselines do not depend on the meta-training seed: repeat them to pair with each.
    overall[b] = dict(
      _summarize(np.tile(b_losses, (1, len(seeds))), lstm),
      mean_loss=b_losses.mean(axis=1).tolist(),
      learning_rate=baseline_results[b]["learning_rate"],
    )
  budget = {
    "epochs": config.epochs,
    "trajectories_per_epoch": config.trajectories_per_epoch,
    "train_batch_size": _BATCH.value,
    "meta_learning_rate": config.meta_learning_rate,
    "meta_gradient_clip": config.meta_gradient_clip,
    "unroll_length": config.unroll_length,
    "meta_steps": config.epochs
    * config.trajectories_per_epoch
    * (config.num_steps // config.unroll_length),
    "seeds": seeds,
  }
  print()
  _print_table(
    f"All {len(seeds)} seeds: mean loss at step {_NUM_STEPS.value} ({_TEST.value} "
    f"held-out problems x {len(seeds)} meta-training seeds); budget per optimizer "
    f"and seed: {config.epochs} epochs x {config.trajectories_per_epoch} trajectories "
    f"x {_BATCH.value} quadratics = {budget['meta_steps']} meta-steps, meta lr "
    f"{config.meta_learning_rate}",
    overall,
  )
  for name in names:
    if name != "lstm" and "lstm" in names:
      per_seed = {
        n: ["%.4g" % f for f in overall[n]["final_loss_mean_per_seed"]] for n in (name, "lstm")
      }
      print(
        f"{name}: mean below the lstm's in {overall[name]['seeds_with_lower_mean_than_lstm']}"
        f" of {len(seeds)} seeds; per seed {per_seed[name]} vs lstm {per_seed['lstm']}"
      )
  evaluation.write_json(
    {
      "problem": "quadratic",
      "num_steps": _NUM_STEPS.value,
      "num_problems": _TEST.value,
      "test_seed": _TEST_SEED.value,
      "overall": overall,
      "per_seed": {str(k): v for k, v in per_seed.items()},
      "meta_training": {"budget": budget, "runs": meta},
    },
    os.path.join(_OUTPUT.value, "results.json"),
  )
  curves = {
    "results": {
      name: {
        "mean_loss": overall[name]["mean_loss"],
        "learning_rate": overall[name].get("learning_rate"),
      }
      for name in overall
    }
  }
  evaluation.plot(
    curves,
    os.path.join(_OUTPUT.value, "loss.png"),
    {**pooled, **baseline_losses},
    title=f"10-d quadratics: {_TEST.value} problems x {len(seeds)} seeds, equal budget",
  )
  print(f"wrote {_OUTPUT.value}/results.json and {_OUTPUT.value}/loss.png")


if __name__ == "__main__":
  cli.run(main)
