"""Quality of the information-sharing optimizers on the 10-dimensional quadratics (Figure 4, right).

Meta-trains the coordinatewise LSTM, LSTM+GAC and NTM-BFGS with the SAME budget (same
MetaTrainingConfig: epochs, trajectories, meta learning rate, training seeds and batch), keeps
each one's best optimizer by validation loss, and runs all of them (plus Adam with its learning
rate tuned on validation problems, for reference) on the same held-out test problems.

    python benchmarks/sharing_quadratic.py --output_dir=/tmp/sharing_quadratic

Writes into --output_dir: one meta-training run per optimizer (<name>/, resumable),
results.json (the evaluation JSON plus the budget and meta-training times), loss.png, and
prints a table of the mean loss at step --num_steps with each optimizer's ratio to the LSTM.
"""
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
import keras
import numpy as np

from l2l_tf import evaluation
from l2l_tf import io
from l2l_tf import learned_rule
from l2l_tf import registry
from l2l_tf.problems.quadratic import QuadraticProblem
from l2l_tf.training.meta_trainer import MetaTrainer
from l2l_tf.training.meta_trainer import MetaTrainingConfig

_OUTPUT = flags.DEFINE_string("output_dir", "/tmp/l2l_sharing_quadratic", "Runs and results.")
_OPTIMIZERS = flags.DEFINE_list("optimizers", ["lstm", "lstm_gac", "ntm_bfgs"],
                                "Learned optimizers to compare (registry names).")
_EPOCHS = flags.DEFINE_integer("epochs", 8, "Meta-training epochs (same for every optimizer).")
_TRAJECTORIES = flags.DEFINE_integer("trajectories_per_epoch", 25, "Trajectories per epoch.")
_BATCH = flags.DEFINE_integer("train_batch_size", 128, "Quadratics per training trajectory.")
_META_LR = flags.DEFINE_float("meta_learning_rate", 0.003, "Adam learning rate (meta).")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 100, "Optimizee steps (T) and evaluation step.")
_UNROLL = flags.DEFINE_integer("unroll_length", 20, "Truncation length.")
_VALIDATION = flags.DEFINE_integer("num_validation_problems", 128, "Early-stopping problems.")
_TEST = flags.DEFINE_integer("num_test_problems", 256, "Held-out test problems (>= 100).")
_TEST_SEED = flags.DEFINE_integer("test_seed", 20_160_614, "Seed of the held-out problems.")
_SEED = flags.DEFINE_integer("seed", 0, "Meta-training seed (same for every optimizer).")
_BASELINES = flags.DEFINE_list("baselines", ["adam"], "Tuned hand-designed baselines to add.")


def main(argv):
  del argv
  if _TEST.value < 100:
    raise app.UsageError("--num_test_problems must be >= 100")
  config = MetaTrainingConfig(num_steps=_NUM_STEPS.value, unroll_length=_UNROLL.value,
                              epochs=_EPOCHS.value,
                              trajectories_per_epoch=_TRAJECTORIES.value,
                              meta_learning_rate=_META_LR.value, seed=_SEED.value,
                              second_derivatives=False, jit_compile="auto",
                              log_every=_TRAJECTORIES.value)
  train_problem = QuadraticProblem(batch_size=_BATCH.value)
  validation_problem = QuadraticProblem(batch_size=_VALIDATION.value)
  rules, meta = {}, {}
  for name in _OPTIMIZERS.value:
    keras.utils.set_random_seed(_SEED.value)  # reproducible initial weights
    rule = learned_rule.LearnedUpdateRule(registry.make_cell(name, "quadratic"))
    run_dir = os.path.join(_OUTPUT.value, name)
    print(f"== meta-training {name} ({sum(int(np.prod(v.shape)) for v in rule.trainable_variables)}"
          " weights)", flush=True)
    history = MetaTrainer(rule, train_problem, validation_problem, config,
                          metadata={"optimizer": name},
                          log=lambda line, n=name: print(f"[{n}] {line}", flush=True)
                          ).train(run_dir)
    best, metadata = io.load_rule(os.path.join(run_dir, "best"))
    rules[name] = best
    meta[name] = {"meta_training_seconds": sum(h["epoch_seconds"] for h in history),
                  "best_validation_loss": metadata.get("best_validation_loss"),
                  "best_epoch": metadata.get("epoch"), "history": history}

  test_problem = QuadraticProblem(batch_size=_TEST.value)
  results, losses = evaluation.compare(test_problem, rules, seed=_TEST_SEED.value,
                                       num_steps=_NUM_STEPS.value,
                                       baselines=tuple(_BASELINES.value),
                                       tuning_problem=validation_problem, tuning_seed=1)
  results["meta_training"] = {
      "budget": {"epochs": config.epochs, "trajectories_per_epoch": config.trajectories_per_epoch,
                 "train_batch_size": _BATCH.value, "meta_learning_rate": config.meta_learning_rate,
                 "meta_gradient_clip": config.meta_gradient_clip, "unroll_length":
                 config.unroll_length, "meta_steps": config.epochs * config.trajectories_per_epoch
                 * (config.num_steps // config.unroll_length), "seed": config.seed},
      "optimizers": meta}
  reference = results["results"].get("lstm", {}).get("final_loss_mean")
  print()
  print(f"Mean loss at step {_NUM_STEPS.value} on {_TEST.value} held-out 10-d quadratics "
        f"(test seed {_TEST_SEED.value}); meta-training budget per optimizer: {config.epochs} "
        f"epochs x {config.trajectories_per_epoch} trajectories x {_BATCH.value} quadratics, "
        f"{results['meta_training']['budget']['meta_steps']} meta-steps, meta lr "
        f"{config.meta_learning_rate}")
  print(f"{'optimizer':<10} {'mean':>10} {'median':>10} {'std':>10} {'vs lstm':>8} "
        f"{'train s':>8} {'best ep':>7}")
  for name, r in sorted(results["results"].items(), key=lambda kv: kv[1]["final_loss_mean"]):
    final = losses[name][-1]
    ratio = f"{r['final_loss_mean'] / reference:.3f}" if reference else "-"
    train_s = f"{meta[name]['meta_training_seconds']:.0f}" if name in meta else "-"
    epoch = str(meta[name]["best_epoch"]) if name in meta else "-"
    r["final_loss_median"] = float(np.median(final))
    print(f"{name:<10} {r['final_loss_mean']:>10.4g} {r['final_loss_median']:>10.4g} "
          f"{r['final_loss_std']:>10.4g} {ratio:>8} {train_s:>8} {epoch:>7}")
  if "lstm" in losses:  # paired comparison on the same problems
    for name in rules:
      if name != "lstm":
        wins = float(np.mean(losses[name][-1] < losses["lstm"][-1]))
        results["results"][name]["fraction_of_problems_better_than_lstm"] = wins
        print(f"{name} lower than lstm at step {_NUM_STEPS.value} on {100 * wins:.0f}% of the "
              "problems")
  evaluation.write_json(results, os.path.join(_OUTPUT.value, "results.json"))
  evaluation.plot(results, os.path.join(_OUTPUT.value, "loss.png"), losses,
                  title=f"10-d quadratics: {_TEST.value} held-out problems, equal meta budget")
  print(f"wrote {_OUTPUT.value}/results.json and {_OUTPUT.value}/loss.png")


if __name__ == "__main__":
  app.run(main)
