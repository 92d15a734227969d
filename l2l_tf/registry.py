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


PROBLEMS = ("quadratic", "mnist")
SPLITS = ("train", "validation", "test")


def make_problem(name, split="train", batch_size=None, dataset_source="embedded",
                 data_dir=None, hidden_sizes=(20,), activation="sigmoid", seed=0):
  """A problem family by name, on one data split.

  Quadratics have no data: splits differ only by the seeds the caller draws with. MNIST
  meta-trains on the train split minus a held-out validation part (10%) and is tested on the
  official test split, digits the optimizer never saw.
  """
  if name not in PROBLEMS:
    raise ValueError(f"Unknown problem {name!r}; choose one of {list(PROBLEMS)}")
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; choose one of {list(SPLITS)}")
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
