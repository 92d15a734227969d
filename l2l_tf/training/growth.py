"""Warm start by growth: a trained optimizer's weights inside a larger cell.

A new input (say, the Adam-normalised momentum of rnnprop) cannot be added to a trained
optimizer by fine-tuning it: its cell has no weights for it. Growing copies every trained weight
into the same-named weight of the larger cell, with zeros for the rows that read the new inputs,
so that the grown optimizer first steps exactly as the trained one did and meta-training starts
from its performance rather than from scratch. grow_from checks that on random gradients.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from l2l_tf import learned_rule

# The check: a few steps on gradients spanning the scales a network's gradients take.
_CHECK_STEPS = 4
_CHECK_COORDINATES = 64


def embed_weights(cell, source_cell) -> None:
  """Writes source_cell's weights into cell's same-named ones (zero-padded along axis 0)."""
  source_weights = {w.name: w for w in source_cell.weights}
  for weight in cell.weights:
    source = source_weights.pop(weight.name, None)
    if source is None:
      continue  # a weight of the new inputs only; the check proves it starts neutral
    have, want = tuple(source.shape), tuple(weight.shape)
    if have[1:] != want[1:] or have[:1] > want[:1]:
      raise ValueError(
        f"cannot grow {type(source_cell).__name__}'s {weight.name} {list(have)} into "
        f"{type(cell).__name__}'s {list(want)}: only rows (new inputs) may be added"
      )
    value = np.zeros(want, weight.dtype)
    value[: have[0]] = np.asarray(source.numpy(), weight.dtype)
    weight.assign(value)
  if source_weights:
    raise ValueError(
      f"cannot grow {type(source_cell).__name__} into {type(cell).__name__}: it has no "
      f"weight for {sorted(source_weights)}"
    )


def _updates(cell, gradients):
  states = cell.get_initial_state([1, gradients.shape[0]])
  updates = []
  for step in range(_CHECK_STEPS):
    update, states = cell(tf.cast(gradients * (0.5 + step), cell.compute_dtype)[None], states)
    updates.append(update.numpy())
  return np.stack(updates)


def check_same_updates(cell, source_cell) -> None:
  """Raises ValueError unless both cells step alike from zero states on random gradients."""
  rng = np.random.default_rng(0)
  scales = np.logspace(-8, 1, _CHECK_COORDINATES)[:, None]
  gradients = tf.constant(rng.normal(size=(_CHECK_COORDINATES, 1)) * scales, tf.float32)
  grown, trained = _updates(cell, gradients), _updates(source_cell, gradients)
  if not np.allclose(grown, trained, rtol=1e-4, atol=1e-7):
    raise ValueError(
      f"the grown {type(cell).__name__} does not step as the {type(source_cell).__name__} it "
      f"grew from (largest difference {np.max(np.abs(grown - trained)):.3g}); its new inputs "
      "must start with no effect (rnnprop: raw_gradient=true, bounded=false, "
      "initial_learning_rate=0) and it must keep the trained preprocessing and output_scale"
    )


def grow_from(
  rule: learned_rule.LearnedUpdateRule, source_rule: learned_rule.LearnedUpdateRule
) -> None:
  """Embeds source_rule's trained weights in rule's cells, group by group, and checks them."""
  if set(rule.cells) != set(source_rule.cells):
    raise ValueError(
      f"cannot grow an optimizer with parameter groups {sorted(source_rule.cells)} into one "
      f"with {sorted(rule.cells)}"
    )
  for group, cell in rule.cells.items():
    embed_weights(cell, source_rule.cells[group])
    check_same_updates(cell, source_rule.cells[group])
