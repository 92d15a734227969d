"""Meta-trains a learned optimizer and leaves the best one (by validation) in --output_dir.

  python scripts/train.py --problem=quadratic --output_dir=runs/quadratic
  python scripts/train.py --problem=mnist --output_dir=runs/mnist --epochs=20
  python scripts/train.py --problem=mnist --lstm_kernel=native ...  # CPU: compiled kernels

Re-running with the same flags resumes from the last checkpoint; a directory holding a
different run is refused.

On several devices (each replica unrolls its share of the --batch_size instances):

  python scripts/train.py --strategy=mirrored ...            # every local GPU
  python scripts/train.py --strategy=mirrored --cpu_devices=2 ...  # a CPU split in two
  TF_CONFIG=... python scripts/train.py --strategy=multi_worker ...  # one process per host
  python scripts/train.py --strategy=tpu --tpu=NAME ...
"""

import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

from absl import flags
import keras

from l2l_tf import cli
from l2l_tf import kernels
from l2l_tf import learned_rule
from l2l_tf import optimizer_format
from l2l_tf import registry
from l2l_tf.cells import coordinatewise_lstm
from l2l_tf.problems import mlp
from l2l_tf.training import distribute
from l2l_tf.training import growth
from l2l_tf.training import meta_trainer
from l2l_tf.training import run_directory
from l2l_tf.training import unroll as unroll_lib

cli.define_problem_flags()
flags.DEFINE_string(
  "output_dir", None, "Where checkpoints and the best optimizer go.", required=True
)
flags.DEFINE_enum("optimizer", "lstm", sorted(registry.CELLS), "Optimizer network.")
flags.DEFINE_integer("unroll_length", 20, "Optimizee steps per truncation.", lower_bound=1)
flags.DEFINE_integer("epochs", 10, "Epochs (each ends with validation).", lower_bound=1)
flags.DEFINE_integer("trajectories_per_epoch", 50, "Trajectories per epoch.", lower_bound=1)
flags.DEFINE_float("meta_learning_rate", 0.003, "Adam learning rate on the optimizer's weights.")
flags.DEFINE_float("meta_gradient_clip", 1.0, "Global-norm clip of meta-gradients (0: off).")
flags.DEFINE_bool("second_derivatives", False, "Keep second derivatives (the paper drops them).")
flags.DEFINE_integer(
  "batch_size",
  None,
  "Problem instances per trajectory (default: 128 quadratics, 1 MNIST network).",
  lower_bound=1,
)
flags.DEFINE_integer("num_validation_problems", 128, "Fixed validation problems.", lower_bound=1)
flags.DEFINE_enum(
  "jit_compile",
  "auto",
  ["auto", "true", "false"],
  "XLA for the unroll; auto = XLA on GPU/TPU, plain graphs on CPU.",
)
flags.DEFINE_enum(
  "lstm_kernel",
  "graph",
  list(coordinatewise_lstm.LSTM_KERNELS),
  "How the LSTM cells compute: graph (TensorFlow ops; any device, XLA) or native "
  "(CPU custom ops compiled from l2l_tf/kernels on first use; no XLA; the fastest on CPU).",
)
flags.DEFINE_enum(
  "preprocessing",
  None,
  ["identity", "log_sign", "scale"],
  "Gradient preprocessing (default: the paper's choice for the problem).",
)
flags.DEFINE_float("output_scale", None, "Update scale (default: the paper's for the problem).")
flags.DEFINE_integer("log_every", 25, "Trajectories between progress lines.", lower_bound=1)
flags.DEFINE_enum(
  "meta_objective",
  "loss",
  list(meta_trainer.META_OBJECTIVES),
  "loss: the paper's sum of losses; log_loss: mean log loss (weighs late steps "
  "as much as early ones).",
)
flags.DEFINE_enum(
  "validation_metric",
  "mean",
  list(meta_trainer.VALIDATION_METRICS),
  "Early stopping on the mean validation loss over all steps, or over the last unroll (final).",
)
flags.DEFINE_string(
  "init_from",
  None,
  "Start from this trained optimizer (run directory, its "
  "best/ or a SavedModel) instead of fresh weights: fine-tuning. Its cell "
  "configuration is used, so --optimizer, --preprocessing and --output_scale "
  "must not be given.",
)
flags.DEFINE_string(
  "grow_from",
  None,
  "Start from this trained optimizer's weights inside the larger --optimizer (e.g. rnnprop "
  'with --cell_config=\'{"raw_gradient": true, "bounded": false, '
  '"initial_learning_rate": 0}\'): its new inputs start at zero weight, so it first steps '
  "exactly as the trained one (checked before training).",
)
flags.DEFINE_string(
  "cell_config",
  None,
  "JSON object of further arguments of the --optimizer cell, e.g. '{\"hidden_sizes\": [40, 40]}'.",
)
flags.DEFINE_list(
  "curriculum",
  [],
  "Stages of training trajectories, STEPS or "
  "STEPSxUNROLL each, e.g. 100x20,100x100: short truncations, then the whole "
  "trajectory; 100,200: longer horizons (Chen et al. 2020). The epochs are "
  "split into equal stages (repeat one to lengthen it); validation keeps "
  "--num_steps.",
)
flags.DEFINE_float(
  "random_scale",
  1.0,
  "Multiply each training instance's loss by a random "
  "log-uniform constant in [1/x, x] per trajectory (Lv et al. 2017); needs "
  "--meta_objective=log_loss. 1: off.",
)
flags.DEFINE_string(
  "imitate",
  None,
  "Warm start: before meta-training, train the optimizer to reproduce this "
  "baseline's updates, NAME:LEARNING_RATE, e.g. adam:0.03 or nag:1 (Chen et al. "
  "2020), for --imitation_trajectories trajectories of --num_steps. Runs once, "
  "when the run starts without a checkpoint (a resumed run does not imitate again).",
)
flags.DEFINE_integer(
  "imitation_trajectories",
  0,
  "Trajectories of --imitate (0: off). Uses --meta_learning_rate and --meta_gradient_clip.",
  lower_bound=0,
)
flags.DEFINE_list(
  "train_networks",
  [],
  "MNIST: meta-train on a distribution of networks, "
  "ACTIVATION:WIDTH[-WIDTH...] each, e.g. sigmoid:20,sigmoid:40,sigmoid:20-20,"
  "relu:20 (one drawn per trajectory). Validation keeps --hidden_sizes and "
  "--activation. Default: that network only.",
)
flags.DEFINE_integer(
  "max_consecutive_skips",
  10,
  "Stop with an error after this many "
  "meta-updates in a row were skipped for a non-finite meta-loss or "
  "meta-gradient (0: never stop).",
  lower_bound=0,
)
flags.DEFINE_integer(
  "validation_window",
  0,
  "Steps at the end of validation trajectories "
  "that --validation_metric=final averages (0: --unroll_length).",
  lower_bound=0,
)
flags.DEFINE_enum(
  "recompute",
  "none",
  list(unroll_lib.RECOMPUTE_MODES),
  "Meta-gradient memory: "
  "none stores every unroll step's intermediates (fastest); steps and blocks "
  "recompute them in the backward pass from one stored trajectory per step or "
  "per block of ~sqrt(--unroll_length) steps (same meta-gradient, less memory, "
  "about one more forward pass of time).",
)
flags.DEFINE_string(
  "strategy",
  "default",
  "tf.distribute strategy: default (one device), "
  "mirrored (every local GPU, else every CPU device), multi_worker (hosts "
  "named by TF_CONFIG) or tpu. Each replica unrolls an equal share of "
  "--batch_size.",
)
flags.DEFINE_integer(
  "cpu_devices",
  0,
  "Split the CPU into this many logical devices (for "
  "--strategy=mirrored without GPUs; 0: leave it whole).",
  lower_bound=0,
)
flags.DEFINE_string(
  "tpu",
  None,
  "--strategy=tpu: the TPU's name or grpc:// address (default: the local TPU VM's or Colab's).",
)
FLAGS = flags.FLAGS


def parse_stage(spec):
  """'100x20' -> (100, 20); '200' -> (200, --unroll_length)."""
  steps, _, unroll = spec.partition("x")
  try:
    return int(steps), int(unroll) if unroll else FLAGS.unroll_length
  except ValueError:
    raise ValueError(
      f"--curriculum entries are STEPS or STEPSxUNROLL, e.g. 100x20; got {spec!r}"
    ) from None


def parse_network(spec):
  """'relu:20-20' -> ('relu', (20, 20)), with a one-line error for anything else."""
  activation, _, widths = spec.partition(":")
  try:
    hidden_sizes = tuple(int(w) for w in widths.split("-"))
  except ValueError:
    hidden_sizes = ()
  if not hidden_sizes or min(hidden_sizes) <= 0 or not activation:
    raise ValueError(
      f"--train_networks entries are ACTIVATION:WIDTH[-WIDTH...], e.g. sigmoid:20-20; got {spec!r}"
    )
  return activation, hidden_sizes


def training_problems():
  """The training family, or the list of families --train_networks asks for."""
  if not FLAGS.train_networks:
    return cli.problem_from_flags("train", FLAGS.batch_size)
  if FLAGS.problem != "mnist":
    raise ValueError("--train_networks applies to --problem=mnist only")
  networks = [parse_network(spec) for spec in FLAGS.train_networks]
  for activation, _ in networks:  # before any data is read
    if activation not in mlp.ACTIVATIONS:
      raise ValueError(
        f"Unknown activation {activation!r} in --train_networks; choose one of "
        f"{sorted(mlp.ACTIVATIONS)}"
      )
  first = registry.make_problem(
    "mnist",
    "train",
    FLAGS.batch_size,
    FLAGS.dataset_source,
    FLAGS.data_dir,
    networks[0][1],
    networks[0][0],
  )
  # The other networks share the first one's data (read and split once).
  return [first] + [
    mlp.MLPClassificationProblem(
      first.images,
      first.labels,
      hidden_sizes=hidden_sizes,
      activation=activation,
      batch_size=first.batch_size,
    )
    for activation, hidden_sizes in networks[1:]
  ]


def make_rule():
  """(rule, optimizer name, metadata of --init_from's optimizer or None), from the flags."""
  cell_options = dict(
    cli.parse_json_object(FLAGS.cell_config, "--cell_config"),
    preprocessing=FLAGS.preprocessing,
    output_scale=FLAGS.output_scale,
  )
  if FLAGS.init_from:
    rule, initial_metadata = optimizer_format.load_rule(FLAGS.init_from)
    # A run's best/ records the optimizer's name at the top; a SavedModel under meta_trained_on.
    optimizer_name = (
      initial_metadata.get("optimizer")
      or initial_metadata.get("meta_trained_on", {}).get("optimizer")
      or FLAGS.optimizer
    )
    return rule, optimizer_name, initial_metadata
  # One cell per parameter group the problem declares (the paper's convnet setup: one network
  # for the conv parameters, one for the rest), else one cell for every parameter.
  rule = learned_rule.make_rule(FLAGS.optimizer, FLAGS.problem, **cell_options)
  if not FLAGS.grow_from:
    return rule, FLAGS.optimizer, None
  source, source_metadata = optimizer_format.load_rule(FLAGS.grow_from)
  growth.grow_from(rule, source)
  return rule, FLAGS.optimizer, dict(source_metadata, grown_into=FLAGS.optimizer)


def start_strategy():
  """The --strategy (None for default), set up before any other TensorFlow op."""
  distribute.configure_cpu_devices(FLAGS.cpu_devices)
  strategy = distribute.make_strategy(FLAGS.strategy, tpu=FLAGS.tpu)
  # The problem factory's own default when --batch_size is not given.
  meta_batch = FLAGS.batch_size or registry.PROBLEMS.attributes(FLAGS.problem).get(
    "default_batch_size", 1
  )
  distribute.check_meta_batch(meta_batch, distribute.num_replicas(strategy))
  return strategy


def main(argv):
  del argv
  distribute.check_strategy_flags(FLAGS.strategy, FLAGS.cpu_devices)
  if FLAGS.tpu and FLAGS.strategy != "tpu":
    raise ValueError("--tpu applies to --strategy=tpu only")
  config = meta_trainer.MetaTrainingConfig(
    num_steps=FLAGS.num_steps,
    unroll_length=FLAGS.unroll_length,
    epochs=FLAGS.epochs,
    trajectories_per_epoch=FLAGS.trajectories_per_epoch,
    meta_learning_rate=FLAGS.meta_learning_rate,
    meta_gradient_clip=FLAGS.meta_gradient_clip,
    second_derivatives=FLAGS.second_derivatives,
    seed=FLAGS.seed,
    jit_compile=FLAGS.jit_compile,
    log_every=FLAGS.log_every,
    meta_objective=FLAGS.meta_objective,
    validation_metric=FLAGS.validation_metric,
    curriculum=tuple(parse_stage(stage) for stage in FLAGS.curriculum),
    random_scale=FLAGS.random_scale,
    validation_window=FLAGS.validation_window,
    max_consecutive_skips=FLAGS.max_consecutive_skips,
    recompute=FLAGS.recompute,
    imitate=FLAGS.imitate or "",
    imitation_trajectories=FLAGS.imitation_trajectories,
  )
  config.validate()  # before any data is loaded or directory touched
  if FLAGS.lstm_kernel == "native" and (
    FLAGS.strategy == "tpu" or meta_trainer.resolve_jit_compile(FLAGS.jit_compile)
  ):
    raise ValueError(
      "--lstm_kernel=native runs on CPU without XLA: use --jit_compile=false "
      "(or auto on a CPU-only machine) and a CPU strategy"
    )
  if FLAGS.lstm_kernel == "native":
    kernels.load()  # builds them now: a missing compiler is reported before any work
  if FLAGS.init_from and (FLAGS.grow_from or FLAGS.cell_config):
    raise ValueError(
      "--init_from keeps its optimizer's cell; --grow_from and --cell_config build a new one"
    )
  if FLAGS.init_from:
    clashing = [
      f"--{name}" for name in ("optimizer", "preprocessing", "output_scale") if FLAGS[name].present
    ]
    if clashing:
      raise ValueError(
        f"--init_from takes the cell configuration from {FLAGS.init_from}; "
        f"drop {', '.join(clashing)}"
      )
    if "parameter_groups" in registry.PROBLEMS.attributes(FLAGS.problem):
      raise ValueError(
        f"--init_from is not supported yet for {FLAGS.problem}, whose optimizer has one "
        "network per parameter group"
      )
  strategy = start_strategy()
  keras.utils.set_random_seed(FLAGS.seed)  # the optimizer's initial weights follow --seed
  problem = training_problems()
  validation = cli.problem_from_flags("validation", FLAGS.num_validation_problems)
  # Variables made under the strategy's scope are mirrored on every replica.
  with strategy.scope() if strategy else contextlib.nullcontext():
    rule, optimizer_name, initial_metadata = make_rule()
  families = problem if isinstance(problem, list) else [problem]
  # With a family of training networks, the problem is the target (validation) network.
  target = families[0] if len(families) == 1 else validation
  metadata = {
    "optimizer": optimizer_name,
    "problem": target.get_config(),
    "dataset_source": FLAGS.dataset_source,
    "command": "python scripts/train.py "
    + " ".join(FLAGS[name].serialize() for name in sorted(FLAGS) if FLAGS[name].present),
  }
  if len(families) > 1:
    metadata["train_networks"] = [p.get_config() for p in families]
  if FLAGS.init_from or FLAGS.grow_from:
    # The lineage: a fine-tuned (or grown) optimizer records what it started from (recursively).
    metadata["init_from"] = {
      "path": FLAGS.init_from or FLAGS.grow_from,
      "metadata": initial_metadata,
    }
  trainer = meta_trainer.MetaTrainer(
    rule, problem, validation, config, metadata=metadata, strategy=strategy
  )
  coordinates = "/".join(str(p.num_coordinates()) for p in families)
  replicas = f" on {trainer.num_replicas} replicas ({FLAGS.strategy})" if strategy else ""
  print(
    f"meta-training {optimizer_name} on {FLAGS.problem}: {coordinates} "
    f"coordinates x {families[0].batch_size} instances{replicas}, {config.epochs} epochs "
    f"of {config.trajectories_per_epoch} trajectories, T={config.num_steps}, "
    f"unroll={config.unroll_length}",
    flush=True,
  )
  if hasattr(target, "describe"):  # neural_art: which feature network and images run
    print(target.describe(), flush=True)
  # The kernel is chosen when the meta-trainer's graphs are traced, inside train().
  with coordinatewise_lstm.lstm_kernel(FLAGS.lstm_kernel):
    history = trainer.train(FLAGS.output_dir)
  best = min(h["best_validation_loss"] for h in history) if history else float("nan")
  if history and run_directory.best_epoch(history) == 0:
    print(
      f"no epoch improved on {trainer.initial_optimizer} (validation loss {best:.4g}); "
      f"{FLAGS.output_dir}/best holds it"
    )
  else:
    print(f"best validation loss {best:.4g}; best optimizer in {FLAGS.output_dir}/best")


if __name__ == "__main__":
  cli.run(main)
