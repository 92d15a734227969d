"""The contracts of l2l_tf's base classes, checked for every registered cell and problem.

Parametrized over l2l_tf.registry: a newly registered cell or problem is tested here without
a line added. Cells: state bookkeeping, shapes, equivariance to the order of the coordinates,
the declared `coordinatewise`, config and optimizer-file round trips, and meta-gradients.
Problems: batched parameters, deterministic seeds, per-step data, finite losses and gradients.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from l2l_tf import learned_rule
from l2l_tf import optimizer_format
from l2l_tf import registry
from l2l_tf.cells import base as cells_base
from l2l_tf.problems import base as problems_base

BATCH, COORDINATES = 2, 7


def _gradients(seed, n=COORDINATES):
  return tf.random.stateless_normal([BATCH, n, 1], [seed, 0]) * 0.1


def _updates(cell, gradients_per_step):
  """The updates of every step when `cell` runs from zero states on these gradients."""
  states = cell.get_initial_state(list(gradients_per_step[0].shape[:2]))
  updates = []
  for gradients in gradients_per_step:
    update, states = cell(gradients, states)
    updates.append(update)
  return updates


@pytest.fixture(name="cell", params=list(registry.CELLS))
def fixture_cell(request):
  keras.utils.set_random_seed(0)
  return registry.make_cell(request.param, "mnist")


def test_cell_declares_its_states_and_is_serializable(cell):
  assert isinstance(cell, cells_base.LearnedOptimizerCell)
  assert len(cell.state_names) == len(cell.state_size)
  assert len(set(cell.state_names)) == len(cell.state_names)
  # The optimizer file format rebuilds only Keras-registered l2l_tf cells.
  registered = keras.saving.get_registered_name(type(cell))
  assert keras.saving.get_registered_object(registered) is type(cell)


def test_cell_steps_with_the_shapes_it_declares(cell):
  states = cell.get_initial_state([BATCH, COORDINATES])
  for size, state in zip(cell.state_size, states):
    trailing = [COORDINATES] if size is None else [size]
    assert state.shape[:2] == [BATCH, COORDINATES] and state.shape[-1:] == trailing
  update, new_states = cell(_gradients(1), states)
  assert update.shape == [BATCH, COORDINATES, 1]
  assert [s.shape for s in new_states] == [s.shape for s in states]
  assert np.all(np.isfinite(update.numpy()))


def test_cell_is_equivariant_to_the_order_of_coordinates(cell):
  steps = [_gradients(seed) for seed in (1, 2, 3)]
  order = np.random.default_rng(0).permutation(COORDINATES)
  plain = _updates(cell, steps)
  permuted = _updates(cell, [tf.gather(g, order, axis=1) for g in steps])
  for a, b in zip(plain, permuted):
    np.testing.assert_allclose(tf.gather(a, order, axis=1).numpy(), b.numpy(), rtol=1e-4, atol=1e-7)


def test_coordinatewise_cells_step_any_split_alike(cell):
  steps = [_gradients(seed) for seed in (1, 2)]
  whole = _updates(cell, steps)[-1].numpy()
  halves = [
    _updates(cell, [g[:, part] for g in steps])[-1].numpy()
    for part in (slice(0, 3), slice(3, None))
  ]
  split_alike = np.allclose(np.concatenate(halves, axis=1), whole, rtol=1e-5, atol=1e-7)
  # A cell that shares information between coordinates must not declare coordinatewise
  # (the Keras optimizer would then step each variable alone and change its result).
  assert split_alike == cell.coordinatewise


def test_cell_config_and_optimizer_file_round_trips(cell, tmp_path):
  steps = [_gradients(seed) for seed in (1, 2)]
  expected = _updates(cell, steps)[-1].numpy()
  rebuilt = type(cell).from_config(cell.get_config())
  rebuilt.set_weights(cell.get_weights())
  np.testing.assert_array_equal(_updates(rebuilt, steps)[-1].numpy(), expected)
  optimizer_format.save_rule(learned_rule.LearnedUpdateRule(cell), str(tmp_path / "opt"))
  loaded, _ = optimizer_format.load_rule(str(tmp_path / "opt"))
  np.testing.assert_array_equal(_updates(loaded.cells["all"], steps)[-1].numpy(), expected)


def test_cell_has_meta_gradients_for_every_weight(cell):
  steps = [_gradients(seed) for seed in (1, 2)]
  with tf.GradientTape() as tape:
    meta_loss = tf.add_n([tf.reduce_sum(tf.square(u)) for u in _updates(cell, steps)])
  gradients = tape.gradient(meta_loss, cell.trainable_variables)
  assert cell.trainable_variables
  assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in gradients)
  assert any(np.any(g.numpy() != 0) for g in gradients)


# ---------------------------------------------------------------------------------- problems


def _problem_options(name, cifar_dir):
  """Data options for the registered problems that need data not shipped in the package."""
  if name in registry.CIFAR_PROBLEMS:
    return {"dataset_source": "binary", "data_dir": cifar_dir}
  if name == "neural_art":
    return {"image_size": 32, "feature_network": "random"}
  return {}


@pytest.fixture(name="problem", params=list(registry.PROBLEMS))
def fixture_problem(request, cifar_dir):
  name = request.param
  return name, registry.make_problem(name, "train", BATCH, **_problem_options(name, cifar_dir))


def test_problem_has_batched_deterministic_parameters(problem):
  name, problem = problem
  assert isinstance(problem, problems_base.Problem)
  assert problem.get_config()["name"] == name and problem.batch_size == BATCH
  params = problem.init_params(3)
  again = problem.init_params(3)
  assert params and set(again) == set(params)
  for key, value in params.items():
    assert value.shape[0] == BATCH and value.dtype == problem.dtype
    np.testing.assert_array_equal(value.numpy(), again[key].numpy())
  assert problem.num_coordinates() == sum(int(np.prod(v.shape[1:])) for v in params.values())


def test_problem_gives_data_per_step_and_finite_losses_and_gradients(problem):
  _, problem = problem
  num_steps = 3
  batches = problem.sample_batches(5, num_steps)
  leaves = tf.nest.flatten(batches)
  assert leaves and all(leaf.shape[0] == num_steps + 1 for leaf in leaves)
  tf.nest.map_structure(np.testing.assert_array_equal, batches, problem.sample_batches(5, 3))
  params = problem.init_params(3)
  with tf.GradientTape() as tape:
    tape.watch(list(params.values()))
    loss = problem.loss(params, tf.nest.map_structure(lambda t: t[1], batches))
    total = tf.reduce_sum(loss)
  assert loss.shape == [BATCH] and np.all(np.isfinite(loss.numpy()))
  gradients = tape.gradient(total, params)
  assert all(np.all(np.isfinite(g.numpy())) for g in gradients.values())
