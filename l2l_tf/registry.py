"""Names used by the scripts: problems and optimizer networks, with clear errors."""
from l2l_tf import cells

# Paper settings per problem family: quadratics get no preprocessing and no output scaling.
_PROBLEM_CELL_DEFAULTS = {
    "quadratic": {"preprocessing": "identity", "output_scale": 1.0},
}
_DEFAULT_CELL_KWARGS = {"preprocessing": "log_sign", "output_scale": 0.1}

OPTIMIZERS = {
    "lstm": cells.CoordinatewiseLSTM,
}


def make_cell(optimizer, problem_name, **overrides):
  """The optimizer network `optimizer` with the paper's settings for `problem_name`."""
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
  kwargs = dict(_PROBLEM_CELL_DEFAULTS.get(problem_name, _DEFAULT_CELL_KWARGS))
  kwargs.update({k: v for k, v in overrides.items() if v is not None})
  return OPTIMIZERS[optimizer](**kwargs)
