"""Names used by the scripts: problems and optimizer networks, with clear errors."""
from l2l_tf import cells

# Paper settings per problem family: quadratics get no preprocessing and no output scaling.
_PROBLEM_CELL_DEFAULTS = {
    "quadratic": {"preprocessing": "identity", "output_scale": 1.0},
}
_DEFAULT_CELL_KWARGS = {"preprocessing": "log_sign", "output_scale": 0.1}

OPTIMIZERS = {
    "lstm": cells.CoordinatewiseLSTM,
    "lstm_gac": cells.GlobalAveragingLSTM,
    "ntm_bfgs": cells.NTMBFGS,
    "ntm_lbfgs": cells.NTMLBFGS,
}


def make_cell(optimizer, problem_name, **overrides):
  """The optimizer network `optimizer` with the paper's settings for `problem_name`."""
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
  kwargs = dict(_PROBLEM_CELL_DEFAULTS.get(problem_name, _DEFAULT_CELL_KWARGS))
  kwargs.update({k: v for k, v in overrides.items() if v is not None})
  return OPTIMIZERS[optimizer](**kwargs)


PROBLEMS = ("quadratic", "mnist", "neural_art")
SPLITS = ("train", "validation", "test")

# CIFAR-10 convnets (l2l_tf.problems.convnet), data from tfds or CIFAR-10's binary files.
# CIFAR-5 and CIFAR-2 are label subsets, renumbered 0..k-1: CIFAR-5 = classes 0-4 (airplane,
# automobile, bird, cat, deer), CIFAR-2 = classes 0-1 (airplane, automobile).
CIFAR_PROBLEMS = ("cifar10", "cifar5", "cifar2")
CIFAR_LABELS = {"cifar10": tuple(range(10)), "cifar5": (0, 1, 2, 3, 4), "cifar2": (0, 1)}
# The paper's "LSTM-sub": meta-train on the labels the test subset does not use, e.g.
# make_problem("cifar5", "train", labels=CIFAR_HELD_OUT_LABELS["cifar5"]) for meta-training
# and make_problem("cifar5", "test") (classes 0-4) for testing.
CIFAR_HELD_OUT_LABELS = {"cifar5": (5, 6, 7, 8, 9), "cifar2": (2, 3, 4, 5, 6, 7, 8, 9)}


def make_problem(name, split="train", batch_size=None, dataset_source="embedded",
                 data_dir=None, hidden_sizes=(20,), activation="sigmoid", seed=0, labels=None,
                 style=None, image_size=64, feature_network="auto"):
  """A problem family by name, on one data split.

  Quadratics have no data: splits differ only by the seeds the caller draws with. MNIST
  meta-trains on the train split minus a held-out validation part (10%) and is tested on the
  official test split, digits the optimizer never saw. CIFAR problems (CIFAR_PROBLEMS) do the
  same with CIFAR-10's train/test splits; they need dataset_source "tfds" or "binary" and
  take `labels` (class ids to keep, default CIFAR_LABELS[name]). neural_art splits its content
  photos by photo (the package's, or data_dir/<split>/) and takes style (a shipped style's name
  or an image path), image_size and feature_network (l2l_tf.problems.neural_art).
  """
  if name not in PROBLEMS + CIFAR_PROBLEMS:
    raise ValueError(f"Unknown problem {name!r}; choose one of {list(PROBLEMS + CIFAR_PROBLEMS)}")
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; choose one of {list(SPLITS)}")
  if name in CIFAR_PROBLEMS:
    return _make_cifar_problem(name, split, batch_size, dataset_source, data_dir, seed, labels)
  if name == "neural_art":
    from l2l_tf.problems import neural_art  # pylint: disable=g-import-not-at-top
    return neural_art.make_problem(split, batch_size or 1, data_dir,
                                   style or neural_art.DEFAULT_STYLE, image_size, feature_network)
  if name == "quadratic":
    from l2l_tf.problems.quadratic import QuadraticProblem  # pylint: disable=g-import-not-at-top
    return QuadraticProblem(batch_size=batch_size or 128)
  from l2l_tf import data  # pylint: disable=g-import-not-at-top
  from l2l_tf.problems.mlp import MLPClassificationProblem  # pylint: disable=g-import-not-at-top
  if split == "test":
    images, labels = data.load_mnist(dataset_source, "test", data_dir)
  else:
    train, validation = data.split_train_validation(
        *data.load_mnist(dataset_source, "train", data_dir), validation_fraction=0.1, seed=seed)
    images, labels = train if split == "train" else validation
  return MLPClassificationProblem(images, labels, hidden_sizes=tuple(hidden_sizes),
                                  activation=activation, batch_size=batch_size or 1)


def _make_cifar_problem(name, split, batch_size, dataset_source, data_dir, seed, labels):
  """CIFAR-10 / -5 / -2 convnet problems; labels overrides the class subset (LSTM-sub)."""
  from l2l_tf import data  # pylint: disable=g-import-not-at-top
  from l2l_tf.problems import convnet  # pylint: disable=g-import-not-at-top
  from l2l_tf.data import cifar  # pylint: disable=g-import-not-at-top
  if dataset_source not in cifar.SOURCES:
    raise ValueError(f"{name} reads CIFAR-10 from dataset_source 'tfds' (downloads) or 'binary' "
                     f"(a directory of the official .bin files, data_dir); got "
                     f"{dataset_source!r} (there is no embedded CIFAR sample)")
  labels = CIFAR_LABELS[name] if labels is None else tuple(labels)
  if split == "test":
    images, targets = data.load_cifar10(dataset_source, "test", data_dir, labels=labels)
  else:
    train, validation = data.split_train_validation(
        *data.load_cifar10(dataset_source, "train", data_dir, labels=labels),
        validation_fraction=0.1, seed=seed)
    images, targets = train if split == "train" else validation
  return convnet.ConvNetClassificationProblem(images, targets, num_classes=len(labels),
                                              batch_size=batch_size or 1, name=name,
                                              class_ids=labels)
