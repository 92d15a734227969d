"""Cells that share information across coordinates: LSTM+GAC, NTM-BFGS and NTM-L-BFGS."""

import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from l2l_tf import optimizer_format
from l2l_tf import registry
from l2l_tf.cells import CoordinatewiseLSTM
from l2l_tf.cells import GlobalAveragingLSTM
from l2l_tf.cells import NTMBFGS
from l2l_tf.cells import NTMLBFGS
from l2l_tf.cells import coordinatewise_lstm
from l2l_tf.learned_rule import LearnedUpdateRule
from l2l_tf.problems.quadratic import QuadraticProblem
from l2l_tf.training import unroll as unroll_lib

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _seeded():
  keras.utils.set_random_seed(0)  # weight initializers: every test sees the same cells


def _random_states(cell, shape, seed):
  """Non-zero states (so that every path of the cell is exercised)."""
  rng = np.random.default_rng(seed)
  return [
    tf.constant(rng.normal(size=s.shape) * 0.5, tf.float32)
    for s in cell.get_initial_state(list(shape))
  ]


def _perturb(cell, stddev=0.5, seed=0):
  """Moves every weight away from its initializer, so that memory and heads matter."""
  for i, w in enumerate(cell.trainable_variables):
    w.assign(w + tf.random.stateless_normal(w.shape, [seed, i], stddev=stddev))
  return cell


def _gradients(shape, steps, seed):
  rng = np.random.default_rng(seed)
  return [tf.constant(rng.normal(size=list(shape) + [1]), tf.float32) for _ in range(steps)]


def _run(cell, grads, states):
  outputs = []
  for g in grads:
    update, states = cell(g, states)
    outputs.append(update.numpy())
  return outputs, [s.numpy() for s in states]


def _variants():
  return {
    "lstm": lambda: CoordinatewiseLSTM(
      hidden_sizes=(6, 5), preprocessing="identity", output_scale=1.0
    ),
    "lstm_gac": lambda: GlobalAveragingLSTM(
      hidden_sizes=(6, 5), global_averaging_units=[2, 3], preprocessing="identity", output_scale=1.0
    ),
    "ntm_bfgs": lambda: NTMBFGS(hidden_sizes=(6, 5), num_read_heads=2, num_write_heads=3),
    "ntm_lbfgs": lambda: NTMLBFGS(
      hidden_sizes=(6, 5), num_read_heads=2, num_write_heads=3, window_size=2
    ),
  }


def test_registry_names():
  for name, cls in [
    ("lstm_gac", GlobalAveragingLSTM),
    ("ntm_bfgs", NTMBFGS),
    ("ntm_lbfgs", NTMLBFGS),
  ]:
    cell = registry.make_cell(name, "quadratic")
    assert type(cell) is cls
    assert cell.output_scale == 1.0 and cell.preprocessor.name == "identity"
  ntm = registry.make_cell("ntm_bfgs", "mnist")
  assert (ntm.num_read_heads, ntm.num_write_heads) == (1, 3)  # the paper's defaults
  assert ntm.global_averaging_units == [2, 2]


def test_gac_output_is_the_mean_over_coordinates_of_each_instance():
  gac = GlobalAveragingLSTM(
    hidden_sizes=(6, 5), global_averaging_units=[2, 3], preprocessing="identity", output_scale=1.0
  )
  shape = (3, 7)
  states = _random_states(gac, shape, 0)
  grads = _gradients(shape, 1, 1)[0]
  _, new_states = gac(grads, states)
  h0, h1 = new_states[0].numpy(), new_states[2].numpy()

  # Reference: the plain LSTM step with the same weights, then the mean over axis -2.
  kernel, recurrent, bias = gac.lstm_weights[0]
  ref_h0, _ = coordinatewise_lstm.lstm_step(
    tf.reshape(grads, [-1, 1]),
    tf.reshape(states[0], [-1, 6]),
    tf.reshape(states[1], [-1, 6]),
    kernel,
    recurrent,
    bias,
  )
  ref_h0 = ref_h0.numpy().reshape(3, 7, 6)
  np.testing.assert_allclose(h0[..., :4], ref_h0[..., :4], atol=ATOL)
  np.testing.assert_allclose(
    h0[..., 4:], np.broadcast_to(ref_h0[..., 4:].mean(axis=-2, keepdims=True), (3, 7, 2)), atol=ATOL
  )
  kernel, recurrent, bias = gac.lstm_weights[1]
  ref_h1, _ = coordinatewise_lstm.lstm_step(
    tf.reshape(h0, [-1, 6]),
    tf.reshape(states[2], [-1, 5]),
    tf.reshape(states[3], [-1, 5]),
    kernel,
    recurrent,
    bias,
  )
  ref_h1 = ref_h1.numpy().reshape(3, 7, 5)
  np.testing.assert_allclose(h1[..., :2], ref_h1[..., :2], atol=ATOL)
  np.testing.assert_allclose(
    h1[..., 2:], np.broadcast_to(ref_h1[..., 2:].mean(axis=-2, keepdims=True), (3, 7, 3)), atol=ATOL
  )
  # Averaged within each instance, not across the batch of independent instances.
  assert np.abs(h1[0, 0, 2:] - h1[1, 0, 2:]).max() > 1e-4
  assert np.abs(h1[0, :, :2] - h1[0, :1, :2]).max() > 1e-4  # local units still differ


def test_gac_fraction_and_no_batch_axis():
  gac = GlobalAveragingLSTM(
    hidden_sizes=(20, 10), global_averaging_fraction=0.25, preprocessing="identity"
  )
  assert gac.global_averaging_units == [5, 2]
  grads = _gradients((6,), 1, 2)[0]
  _, states = gac(grads, gac.get_initial_state(6))
  h = states[2].numpy()
  assert h.shape == (6, 10)
  np.testing.assert_allclose(h[:, 8:], np.broadcast_to(h[:1, 8:], (6, 2)), atol=ATOL)


@pytest.mark.parametrize("name", ["lstm", "lstm_gac", "ntm_bfgs", "ntm_lbfgs"])
def test_equivariant_to_permuting_coordinates(name):
  cell = _perturb(_variants()[name]())
  shape = (2, 6)
  perm = np.array([3, 0, 5, 1, 4, 2])
  grads = _gradients(shape, 4, 3)
  states = cell.get_initial_state(list(shape))
  outputs, final = _run(cell, grads, states)
  p_outputs, p_final = _run(
    cell, [tf.gather(g, perm, axis=1) for g in grads], cell.get_initial_state(list(shape))
  )
  for out, p_out in zip(outputs, p_outputs):
    np.testing.assert_allclose(p_out, out[:, perm], atol=ATOL)
  for state_name, s, p_s in zip(cell.state_names, final, p_final):
    expected = s[:, perm]
    if state_name == "memory":
      expected = expected[:, :, perm]
    np.testing.assert_allclose(p_s, expected, rtol=1e-5, atol=ATOL, err_msg=state_name)
  # The outputs are not trivially permutation-invariant (the check above could fail).
  assert np.abs(outputs[-1][:, perm] - outputs[-1]).max() > 1e-6


@pytest.mark.parametrize("heads", [1, 2])
def test_write_is_low_rank_and_equals_sum_of_outer_products(heads):
  cell = _perturb(NTMBFGS(hidden_sizes=(6, 5), num_write_heads=heads, preprocessing="identity"))
  shape = (2, 9)
  grads = _gradients(shape, 3, 4)
  states = cell.get_initial_state(list(shape))
  for g in grads[:2]:
    _, states = cell(g, states)
  before = states[-1].numpy()
  step = cell.controller_step(grads[2], states)
  _, states = cell(grads[2], states)
  change = states[-1].numpy() - before
  for instance in range(2):
    singular = np.linalg.svd(change[instance].astype(np.float64), compute_uv=False)
    rank = int(np.sum(singular > 1e-4 * singular[0]))
    assert singular[0] > 0 and rank <= heads
    assert rank == heads  # the writes are not degenerate: the bound is tight, so it can fail
  a, b = step["write_a"].numpy(), step["write_b"].numpy()
  np.testing.assert_allclose(change, np.einsum("bik,bjk->bij", a, b), atol=ATOL)


@pytest.mark.parametrize("cls", [NTMBFGS, NTMLBFGS])
def test_read_equals_memory_times_keys(cls):
  kwargs = {"window_size": 4} if cls is NTMLBFGS else {}
  cell = _perturb(cls(hidden_sizes=(6, 5), num_read_heads=2, num_write_heads=3, **kwargs))
  shape = (2, 8)
  states = _random_states(cell, shape, 5)
  rng = np.random.default_rng(6)
  if cls is NTMBFGS:
    memory = rng.normal(size=(2, 8, 8))
    states[-1] = tf.constant(memory, tf.float32)
  else:
    window_a, window_b = rng.normal(size=(2, 2, 8, 12))
    states[-2:] = [tf.constant(window_a, tf.float32), tf.constant(window_b, tf.float32)]
    memory = np.einsum("bik,bjk->bij", window_a, window_b)
  grads = _gradients(shape, 1, 7)[0]
  step = cell.controller_step(grads, states)
  updates, new_states = cell(grads, states)
  keys = step["read_keys"].numpy()
  read = new_states[cell.state_names.index("read")].numpy()
  expected_read = np.einsum("bij,bjr->bir", memory, keys)  # i_t = M_t r_t, row j to coordinate j
  np.testing.assert_allclose(read, expected_read, rtol=1e-4, atol=1e-4)
  expected_updates = cell.output_scale * (
    step["direct_output"].numpy() + expected_read @ cell.read_output_kernel.numpy()
  )
  np.testing.assert_allclose(updates.numpy(), expected_updates, rtol=1e-4, atol=1e-5)


def test_read_is_fed_back_to_the_controller():
  cell = _perturb(NTMBFGS(hidden_sizes=(6, 5)))
  shape = (1, 5)
  states = _random_states(cell, shape, 8)
  grads = _gradients(shape, 1, 9)[0]
  changed = list(states)
  changed[cell.state_names.index("read")] = states[cell.state_names.index("read")] + 1.0
  h = cell.controller_step(grads, states)["lstm_states"][0].numpy()
  h_changed = cell.controller_step(grads, changed)["lstm_states"][0].numpy()
  assert np.abs(h - h_changed).max() > 1e-4


@pytest.mark.parametrize("cls", [NTMBFGS, NTMLBFGS])
def test_fresh_ntm_starts_with_its_memory_paths_closed(cls):
  """A fresh cell's update and controller ignore the memory: it starts as a plain LSTM+GAC."""
  cell = cls(hidden_sizes=(6, 5))
  shape = (2, 7)
  states = _random_states(cell, shape, 12)
  changed = [
    s + 3.0 if name == "read" or "memory" in name or "window" in name else s
    for name, s in zip(cell.state_names, states)
  ]
  grads = _gradients(shape, 1, 13)[0]
  update, new_states = cell(grads, states)
  changed_update, changed_states = cell(grads, changed)
  np.testing.assert_allclose(changed_update.numpy(), update.numpy(), atol=1e-6)
  for name, s, c in zip(cell.state_names, new_states, changed_states):
    if name.startswith("lstm"):
      np.testing.assert_allclose(c.numpy(), s.numpy(), atol=1e-6, err_msg=name)
  # ...while the memory itself is read and written from the first step.
  read = new_states[cell.state_names.index("read")].numpy()
  assert np.abs(read - changed_states[cell.state_names.index("read")].numpy()).max() > 1e-3


def test_lbfgs_equals_bfgs_while_the_window_covers_the_history():
  steps = 6
  dense = NTMBFGS(
    hidden_sizes=(6, 5),
    num_read_heads=2,
    num_write_heads=3,
    preprocessing="identity",
    output_scale=1.0,
  )
  _perturb(dense)
  windowed = NTMLBFGS(
    hidden_sizes=(6, 5),
    num_read_heads=2,
    num_write_heads=3,
    window_size=steps,
    preprocessing="identity",
    output_scale=1.0,
  )
  windowed.set_weights(dense.get_weights())
  shape = (3, 7)
  grads = _gradients(shape, steps, 10)
  dense_states = dense.get_initial_state(list(shape))
  window_states = windowed.get_initial_state(list(shape))
  for g in grads:
    dense_update, dense_states = dense(g, dense_states)
    window_update, window_states = windowed(g, window_states)
    np.testing.assert_allclose(window_update.numpy(), dense_update.numpy(), rtol=1e-4, atol=1e-5)
    for d, w in zip(dense_states[:-1], window_states[:-2]):
      np.testing.assert_allclose(w.numpy(), d.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
      tf.matmul(window_states[-2], window_states[-1], transpose_b=True).numpy(),
      dense_states[-1].numpy(),
      rtol=1e-4,
      atol=1e-5,
    )
  assert np.abs(dense_states[-1].numpy()).mean() > 0.1  # the memory was used
  assert np.abs(dense_states[dense.state_names.index("read")].numpy()).mean() > 0.1


def test_lbfgs_window_keeps_only_the_last_k_steps():
  cell = _perturb(NTMLBFGS(hidden_sizes=(6, 5), num_write_heads=2, window_size=2))
  shape = (2, 5)
  states = cell.get_initial_state(list(shape))
  writes = []
  for g in _gradients(shape, 5, 11):
    step = cell.controller_step(g, states)
    writes.append(np.einsum("bik,bjk->bij", step["write_a"].numpy(), step["write_b"].numpy()))
    _, states = cell(g, states)
  assert states[-1].shape == (2, 5, 4)
  np.testing.assert_allclose(
    tf.matmul(states[-2], states[-1], transpose_b=True).numpy(),
    writes[-1] + writes[-2],
    rtol=1e-4,
    atol=1e-5,
  )


@pytest.mark.parametrize("name", ["lstm_gac", "ntm_bfgs", "ntm_lbfgs"])
def test_meta_gradients_reach_every_weight(name):
  overrides = {"window_size": 2} if name == "ntm_lbfgs" else {}
  cell = registry.make_cell(name, "quadratic", **overrides)
  if name != "lstm_gac":
    # A fresh NTM's memory paths start closed (zero read-out and zero controller rows for the
    # read), so its read keys get no gradient until the first meta-update opens them; open
    # them as that update would.
    cell.build()
    cell.read_output_kernel.assign(tf.fill(cell.read_output_kernel.shape, 0.01))
    kernel = cell.lstm_weights[0][0]
    kernel.assign(kernel + tf.random.stateless_normal(kernel.shape, [1, 2], stddev=0.01))
  rule = LearnedUpdateRule(cell)
  problem = QuadraticProblem(batch_size=4)
  batches = problem.sample_batches(0, 6)
  first = tf.nest.map_structure(lambda x: x[0], batches)
  rest = tf.nest.map_structure(lambda x: x[1:], batches)
  trajectory = unroll_lib.start_trajectory(problem, rule, problem.init_params(0), first)
  with tf.GradientTape() as tape:
    meta_loss, _, _ = unroll_lib.unroll(problem, rule, trajectory, rest)
  grads = tape.gradient(meta_loss, rule.trainable_variables)
  assert np.isfinite(meta_loss.numpy())
  assert len(rule.trainable_variables) == (8 if name == "lstm_gac" else 13)
  for variable, grad in zip(rule.trainable_variables, grads):
    assert grad is not None, variable.name
    assert np.all(np.isfinite(grad.numpy())), variable.name
    assert np.abs(grad.numpy()).max() > 0, variable.name


@pytest.mark.parametrize(
  "make, message",
  [
    (lambda: GlobalAveragingLSTM(global_averaging_fraction=1.5), "global_averaging_fraction"),
    (lambda: GlobalAveragingLSTM(global_averaging_fraction=-0.1), "global_averaging_fraction"),
    (
      lambda: GlobalAveragingLSTM(global_averaging_fraction=float("nan")),
      "global_averaging_fraction",
    ),
    (lambda: GlobalAveragingLSTM(global_averaging_units=21), r"\[0, 20\]"),
    (lambda: GlobalAveragingLSTM(global_averaging_units=-1), "global_averaging_units"),
    (lambda: GlobalAveragingLSTM(global_averaging_units=1.5), "global_averaging_units"),
    (lambda: GlobalAveragingLSTM(global_averaging_units=[1, 2, 3]), "3 entries"),
    (
      lambda: GlobalAveragingLSTM(global_averaging_units=2, global_averaging_fraction=0.5),
      "not both",
    ),
    (lambda: NTMBFGS(num_read_heads=0), "num_read_heads"),
    (lambda: NTMBFGS(num_write_heads=0), "num_write_heads"),
    (lambda: NTMBFGS(num_write_heads=2.5), "num_write_heads"),
    (lambda: NTMBFGS(global_averaging_units=[30, 1]), "global_averaging_units"),
    (lambda: NTMBFGS(max_dense_coordinates=0), "max_dense_coordinates"),
    (lambda: NTMLBFGS(window_size=0), "window_size"),
    (lambda: NTMLBFGS(window_size=True), "window_size"),
    (lambda: NTMLBFGS(num_read_heads=-2), "num_read_heads"),
  ],
)
def test_bad_arguments_are_refused(make, message):
  with pytest.raises(ValueError, match=message):
    make()


def test_gac_boundaries_are_accepted():
  assert GlobalAveragingLSTM(global_averaging_units=0).global_averaging_units == [0, 0]
  assert GlobalAveragingLSTM(global_averaging_fraction=[0.0, 1.0]).global_averaging_units == [0, 20]


def test_dense_memory_over_the_limit_is_refused_early():
  cell = NTMBFGS(max_dense_coordinates=100)
  cell.get_initial_state([2, 100])
  with pytest.raises(ValueError, match="NTMLBFGS"):
    cell.get_initial_state([2, 101])
  # MNIST-sized: refused at once (a 15,910^2 float32 memory would be ~1 GB per instance).
  params = {"w": tf.zeros([128, 15910])}
  rule = LearnedUpdateRule(registry.make_cell("ntm_bfgs", "mnist"))
  start = time.perf_counter()
  with pytest.raises(ValueError, match="ntm_lbfgs"):
    rule.init_state(params)
  assert time.perf_counter() - start < 1.0
  # The windowed variant takes it, in O(n k).
  state = LearnedUpdateRule(registry.make_cell("ntm_lbfgs", "mnist")).init_state(
    {"w": tf.zeros([1, 15910])}
  )
  assert state["all"][-1].shape == (1, 15910, 30)
  # A size only known when the graph runs is refused by an assertion before allocation.
  limited = NTMBFGS(max_dense_coordinates=10)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
  def initial_memory(x):
    return limited.get_initial_state([tf.shape(x)[0]])[-1]

  assert initial_memory(tf.zeros([10])).shape == (10, 10)
  with pytest.raises(tf.errors.InvalidArgumentError, match="NTMLBFGS"):
    initial_memory(tf.zeros([11]))


@pytest.mark.parametrize(
  "make",
  [
    lambda: GlobalAveragingLSTM(hidden_sizes=(6, 5), global_averaging_units=[1, 3]),
    lambda: NTMBFGS(
      hidden_sizes=(6, 5),
      num_read_heads=2,
      num_write_heads=2,
      global_averaging_fraction=0.5,
      max_dense_coordinates=50,
    ),
    lambda: NTMLBFGS(
      hidden_sizes=(6,),
      num_write_heads=1,
      window_size=3,
      preprocessing={"name": "log_sign", "p": 5.0},
      output_scale=0.01,
    ),
  ],
  ids=["lstm_gac", "ntm_bfgs", "ntm_lbfgs"],
)
def test_save_and_load_reproduce_outputs(make, tmp_path):
  cell = _perturb(make(), stddev=0.1)
  rule = LearnedUpdateRule(cell)
  optimizer_format.save_rule(rule, str(tmp_path / "opt"))
  loaded, _ = optimizer_format.load_rule(str(tmp_path / "opt"))
  loaded_cell = loaded.cells["all"]
  assert type(loaded_cell) is type(cell)
  assert loaded_cell.get_config() == cell.get_config()
  shape = (2, 6)
  grads = _gradients(shape, 4, 12)
  outputs, states = _run(cell, grads, cell.get_initial_state(list(shape)))
  loaded_outputs, loaded_states = _run(
    loaded_cell, grads, loaded_cell.get_initial_state(list(shape))
  )
  for a, b in zip(outputs + states, loaded_outputs + loaded_states):
    np.testing.assert_allclose(b, a, atol=1e-6)
