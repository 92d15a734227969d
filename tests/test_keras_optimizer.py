"""LearnedOptimizer: model.fit equals the learned step applied by hand, serialization, slots,
parameter groups, distribution and mixed precision, and refusals."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import l2l_tf
from l2l_tf import export
from l2l_tf import keras_optimizer
from l2l_tf import optimizer_format
from l2l_tf.cells import CoordinatewiseLSTM
from l2l_tf.cells import GlobalAveragingLSTM
from l2l_tf.cells import NTMBFGS
from l2l_tf.cells import NTMLBFGS

import repo_paths

ROOT = repo_paths.ROOT
LEARNING_RATE = 0.7
rng = np.random.default_rng(0)
X = rng.normal(size=(32, 6)).astype(np.float32)
Y = rng.integers(0, 3, 32)


def _cell(seed=0, hidden_sizes=(4, 4)):
  keras.utils.set_random_seed(seed)
  cell = CoordinatewiseLSTM(hidden_sizes=hidden_sizes)
  cell.output_kernel.assign(
    np.random.default_rng(seed).normal(size=(hidden_sizes[-1], 1)).astype(np.float32)
  )
  return cell


def _model(hidden=5, dtype=None):
  keras.utils.set_random_seed(42)
  return keras.Sequential(
    [
      keras.Input((6,)),
      keras.layers.Dense(hidden, activation="tanh", dtype=dtype),
      keras.layers.Dense(3, dtype=dtype),
    ]
  )


def _loss():
  return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _fit(model, steps):
  """`steps` full-batch steps, deterministic order."""
  model.fit(X, Y, batch_size=len(X), epochs=steps, shuffle=False, verbose=0)


def _hand_trained(cell, steps, learning_rate=LEARNING_RATE):
  """The learned step applied by hand: the cell on each variable's gradient [1, n, 1]."""
  model = _model()
  states = {
    id(v): cell.get_initial_state((1, int(np.prod(v.shape)))) for v in model.trainable_variables
  }
  for _ in range(steps):
    with tf.GradientTape() as tape:
      loss = _loss()(Y, model(X))
    grads = tape.gradient(loss, model.trainable_variables)
    for v, g in zip(model.trainable_variables, grads):
      update, states[id(v)] = cell(tf.reshape(g, [1, -1, 1]), states[id(v)])
      v.assign_add(learning_rate * tf.reshape(update, v.shape))
  return model, states


SHARING = ["gac", "ntm_bfgs", "ntm_lbfgs"]
_SHARING_CELLS = {"gac": GlobalAveragingLSTM, "ntm_bfgs": NTMBFGS, "ntm_lbfgs": NTMLBFGS}


def _make(name, hidden_sizes=(4, 4), **kwargs):
  return (CoordinatewiseLSTM if name == "lstm" else _SHARING_CELLS[name])(
    hidden_sizes=hidden_sizes, **kwargs
  )


def _opened(name, seed=0, **kwargs):
  """A small sharing cell whose every path is open: random output, read and read-in weights
  (a fresh NTM's are zero), so the shared averages and memory shape the update."""
  keras.utils.set_random_seed(seed)
  cell = _make(name, **kwargs)
  rng = np.random.default_rng(seed)
  for weight in cell.weights:
    if weight.name in ("output_kernel", "read_output_kernel", "lstm_0_kernel"):
      weight.assign(rng.normal(size=weight.shape).astype(weight.dtype))
  return cell


_SHIPPED = {}


def _like_shipped(name):
  """A 2 x 20 cell of kind `name` holding the shipped MNIST optimizer's LSTM weights (the
  shipped rnnprop's first-layer rows beyond the paper's two inputs are left out; an NTM's extra
  first-layer rows and heads keep their initial values)."""
  if not _SHIPPED:
    shipped = optimizer_format.load_rule(os.path.join(ROOT, "savedmodels", "mnist"))[0].cells["all"]
    _SHIPPED.update({w.name: w.numpy() for w in shipped.weights})
  cell = _make(name, hidden_sizes=(20, 20))
  for weight in cell.weights:
    if weight.name in _SHIPPED:
      value = weight.numpy()
      overlap = tuple(slice(0, min(a, b)) for a, b in zip(value.shape, _SHIPPED[weight.name].shape))
      value[overlap] = _SHIPPED[weight.name][overlap]
      weight.assign(value)
  return cell


def _state_variables(optimizer):
  """The optimizer's cell-state slots (not iterations, learning_rate or skipped_steps)."""
  counters = {id(optimizer.iterations), id(optimizer.skipped_steps)}
  return [v for v in optimizer.variables if id(v) not in counters and "learning_rate" not in v.path]


def _numpy(variables):
  return [v.numpy() for v in variables]


@pytest.fixture(scope="module")
def cell():
  return _cell()


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_equals_learned_step_by_hand(cell, jit_compile):
  steps = 3
  model = _model()
  initial = [w.copy() for w in model.get_weights()]
  optimizer = l2l_tf.LearnedOptimizer(cell, learning_rate=LEARNING_RATE)
  model.compile(optimizer=optimizer, loss=_loss(), jit_compile=jit_compile)
  _fit(model, steps)
  by_hand, states = _hand_trained(cell, steps)
  tol = 1e-5 if jit_compile else 1e-6
  moved = max(np.abs(a - b).max() for a, b in zip(model.get_weights(), initial))
  assert moved > 1e-3  # the optimizer really stepped
  for v, w in zip(model.trainable_variables, by_hand.trainable_variables):
    np.testing.assert_allclose(v.numpy(), w.numpy(), atol=tol, rtol=tol, err_msg=v.path)
    for slot, state in zip(optimizer.state_slots(v), states[id(w)]):
      assert tuple(slot.shape) == tuple(v.shape) + (state.shape[-1],)
      np.testing.assert_allclose(
        slot.numpy().reshape(-1, state.shape[-1]), state.numpy()[0], atol=tol, rtol=tol
      )
  assert int(optimizer.iterations.numpy()) == steps


@pytest.mark.parametrize("name", SHARING + ["lstm"])
def test_keras_file_round_trip_continues_bit_identically(name, tmp_path):
  model = _model()
  cell = _opened(name) if name != "lstm" else _cell()
  model.compile(optimizer=l2l_tf.LearnedOptimizer(cell, learning_rate=LEARNING_RATE), loss=_loss())
  _fit(model, 2)
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  optimizer = loaded.optimizer
  assert isinstance(optimizer, l2l_tf.LearnedOptimizer)
  assert float(optimizer.learning_rate.numpy()) == pytest.approx(LEARNING_RATE)
  for a, b in zip(optimizer.rule.cells["all"].weights, cell.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert len(optimizer.variables) == len(model.optimizer.variables)
  for a, b in zip(optimizer.variables, model.optimizer.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
  assert max(np.abs(s.numpy()).max() for s in _state_variables(optimizer)) > 0  # real state
  _fit(model, 2)
  _fit(loaded, 2)
  for a, b in zip(
    model.get_weights() + _numpy(model.optimizer.variables),
    loaded.get_weights() + _numpy(optimizer.variables),
  ):
    np.testing.assert_array_equal(a, b)


def test_config_carries_weights_and_from_config(cell):
  optimizer = l2l_tf.LearnedOptimizer(
    cell, learning_rate=0.5, parameter_groups={".*": "all"}, clipnorm=1.0
  )
  config = json.loads(json.dumps(optimizer.get_config()))  # JSON-able
  assert config["rule_or_cell"]["weights"]
  restored = l2l_tf.LearnedOptimizer.from_config(config)
  assert restored.parameter_groups == {".*": "all"} and restored.clipnorm == 1.0
  for a, b in zip(restored.rule.cells["all"].weights, cell.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  round_trip = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
  assert isinstance(round_trip, l2l_tf.LearnedOptimizer)


def test_from_saved_model_and_optimizer_directory(cell, tmp_path):
  saved_model = export.export_saved_model(cell, str(tmp_path / "sm"))
  optimizer_dir = str(tmp_path / "dir")
  optimizer_format.save_rule(l2l_tf.LearnedUpdateRule(cell), optimizer_dir, {"problem": "test"})
  by_hand, _ = _hand_trained(cell, 2, learning_rate=1.0)
  for path in (saved_model, optimizer_dir):
    model = _model()
    optimizer = l2l_tf.LearnedOptimizer.from_saved_model(path)
    assert optimizer.metadata
    for _ in range(2):  # optimizer.apply: the same update_step that model.fit runs
      with tf.GradientTape() as tape:
        loss = _loss()(Y, model(X))
      optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    for a, b in zip(model.get_weights(), by_hand.get_weights()):
      np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)


def test_bad_paths_refused_with_clear_messages(cell, tmp_path):
  exported = export.export_saved_model(cell, str(tmp_path / "good"))
  foreign = str(tmp_path / "foreign")
  module = tf.Module()
  module.f = tf.function(lambda x: x + 1.0, input_signature=[tf.TensorSpec([None], tf.float32)])
  tf.saved_model.save(module, foreign, signatures=module.f)
  corrupt_weights = str(tmp_path / "corrupt_weights")
  shutil.copytree(exported, corrupt_weights)
  with open(os.path.join(corrupt_weights, "assets", optimizer_format.WEIGHTS_FILE), "wb") as f:
    f.write(b"PK\x03\x04 truncated zip")
  corrupt_graph = str(tmp_path / "corrupt_graph")
  shutil.copytree(exported, corrupt_graph)
  with open(os.path.join(corrupt_graph, "saved_model.pb"), "wb") as f:
    f.write(b"\x0a\xff\xff\xff\xff\x0fnot a protobuf")
  a_file = tmp_path / "notes.txt"
  a_file.write_text("not a model")
  empty = tmp_path / "empty"
  empty.mkdir()
  cases = {
    str(tmp_path / "missing"): "does not exist",
    str(a_file): "not a directory",
    str(empty): "not an l2l_tf optimizer",
    foreign: "another program",
    corrupt_weights: "weights",
    corrupt_graph: "corrupt",
  }
  for path, phrase in cases.items():
    with pytest.raises(optimizer_format.OptimizerFileError) as info:
      l2l_tf.LearnedOptimizer.from_saved_model(path)
    assert path in str(info.value) and phrase in str(info.value), str(info.value)


def test_refuses_state_saved_for_different_variables(cell):
  def built(model):
    optimizer = l2l_tf.LearnedOptimizer(cell)
    optimizer.build(model.trainable_variables)
    return optimizer

  source = built(_model(hidden=5))
  store = {}
  source.save_own_variables(store)
  with pytest.raises(ValueError, match="different variables"):
    built(_model(hidden=4)).load_own_variables(dict(store))
  deeper = keras.Sequential(
    [keras.Input((6,)), keras.layers.Dense(5), keras.layers.Dense(5), keras.layers.Dense(3)]
  )
  with pytest.raises(ValueError, match="different variables"):
    built(deeper).load_own_variables(dict(store))
  target = built(_model(hidden=5))  # the same variables: accepted
  target.load_own_variables(dict(store))
  # State saved before skipped_steps existed (iterations, learning rate, then the slots).
  source.iterations.assign(7)
  source.state_slots(source._trainable_variables[0])[0].assign(
    np.ones(source.state_slots(source._trainable_variables[0])[0].shape)
  )
  store = {}
  source.save_own_variables(store)
  legacy = {k: v for k, v in store.items() if not k.isdigit()}
  skipped = [id(v) for v in source.variables].index(id(source.skipped_steps))
  old_values = [store[str(i)] for i in range(len(source.variables)) if i != skipped]
  legacy.update({str(i): value for i, value in enumerate(old_values)})
  target = built(_model(hidden=5))
  target.load_own_variables(legacy)
  assert int(target.iterations.numpy()) == 7 and int(target.skipped_steps.numpy()) == 0
  for a, b in zip(_numpy(_state_variables(target)), _numpy(_state_variables(source))):
    np.testing.assert_array_equal(a, b)


def test_parameter_groups_map_variables_to_cells():
  kernels, biases = _cell(1, (4, 3)), _cell(2, (2,))
  rule = l2l_tf.LearnedUpdateRule(
    {"kernels": kernels, "biases": biases}, {"kernels": "w", "biases": "b"}
  )
  optimizer = l2l_tf.LearnedOptimizer(
    rule, parameter_groups={"kernel": "kernels", "bias": "biases"}
  )
  model = _model()
  initial = [w.copy() for w in model.get_weights()]
  with tf.GradientTape() as tape:
    loss = _loss()(Y, model(X))
  grads = tape.gradient(loss, model.trainable_variables)
  optimizer.apply(grads, model.trainable_variables)
  for v, g, w0 in zip(model.trainable_variables, grads, initial):
    group_cell = kernels if "kernel" in v.path else biases
    assert [s.shape[-1] for s in optimizer.state_slots(v)] == list(group_cell.state_size)
    update, _ = group_cell(
      tf.reshape(g, [1, -1, 1]), group_cell.get_initial_state((1, int(np.prod(v.shape))))
    )
    np.testing.assert_allclose(
      v.numpy(), w0 + tf.reshape(update, v.shape).numpy(), atol=1e-6, rtol=1e-6
    )
  with pytest.raises(ValueError, match="no group"):
    l2l_tf.LearnedOptimizer(rule, parameter_groups={"kernel": "kernels"}).build(
      _model().trainable_variables
    )
  with pytest.raises(ValueError, match="does not have"):
    l2l_tf.LearnedOptimizer(rule, parameter_groups={".*": "nope"})


def test_cells_declare_whether_they_share():
  assert keras_optimizer.steps_each_variable_alone(CoordinatewiseLSTM(hidden_sizes=(2,)))
  for name in SHARING:
    assert not keras_optimizer.steps_each_variable_alone(_make(name))


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("name", ["lstm"] + SHARING)
def test_every_cell_lowers_the_loss_in_fit(name, jit_compile):
  # The shipped MNIST LSTM's weights in every cell (an NTM's memory paths stay closed, as a
  # fresh NTM's are; untrained memory paths make any step size diverge).
  model = _model()
  optimizer = l2l_tf.LearnedOptimizer(_like_shipped(name))
  model.compile(optimizer=optimizer, loss=_loss(), jit_compile=jit_compile)
  losses = model.fit(X, Y, batch_size=len(X), epochs=15, shuffle=False, verbose=0).history["loss"]
  assert losses[-1] < 0.9 * losses[0], losses
  assert int(optimizer.skipped_steps.numpy()) == 0


def _step_groups_by_hand(model, cells, group_of, steps, learning_rate, per_variable=False):
  """The cells' own steps: per group, all its variables' gradients concatenated in order (or,
  with per_variable, each variable as an instance of its own)."""
  variables = model.trainable_variables
  instances = {}
  for v in variables:
    instances.setdefault(v.path if per_variable else group_of(v), []).append(v)
  cell_of = lambda vs: cells[group_of(vs[0])]
  states = {
    k: cell_of(vs).get_initial_state((1, sum(int(np.prod(v.shape)) for v in vs)))
    for k, vs in instances.items()
  }
  for _ in range(steps):
    with tf.GradientTape() as tape:
      loss = _loss()(Y, model(X.astype(np.float64)))
    grads = dict(zip([id(v) for v in variables], tape.gradient(loss, variables)))
    for k, vs in instances.items():
      flat = tf.concat([tf.reshape(grads[id(v)], [-1]) for v in vs], axis=0)
      update, states[k] = cell_of(vs)(flat[None, :, None], states[k])
      parts = tf.split(update[0, :, 0], [int(np.prod(v.shape)) for v in vs])
      for v, part in zip(vs, parts):
        v.assign_add(learning_rate * tf.reshape(part, v.shape))
  return states


@pytest.mark.parametrize(
  "name,two_groups", [("gac", False), ("gac", True), ("ntm_bfgs", False), ("ntm_lbfgs", False)]
)
def test_sharing_update_equals_the_cell_on_the_concatenated_group(name, two_groups):
  keras.backend.set_floatx("float64")
  try:
    cells = {
      "kernels": _opened(name, dtype="float64", seed=1),
      "biases": _opened(name, dtype="float64", seed=2),
    }
    if not two_groups:
      cells = {"all": cells["kernels"]}
    group_of = lambda v: (
      "all" if not two_groups else ("kernels" if "kernel" in v.path else "biases")
    )
    rule = l2l_tf.LearnedUpdateRule(
      cells, {"kernels": "kernel", "biases": "bias"} if two_groups else None
    )
    model = _model(dtype="float64")
    optimizer = l2l_tf.LearnedOptimizer(rule, learning_rate=LEARNING_RATE)
    model.compile(optimizer=optimizer, loss=_loss())
    model.fit(X.astype(np.float64), Y, batch_size=len(X), epochs=3, shuffle=False, verbose=0)
    by_hand = _model(dtype="float64")
    states = _step_groups_by_hand(by_hand, cells, group_of, 3, LEARNING_RATE)
    separately = _model(dtype="float64")  # each variable as its own instance: must differ
    _step_groups_by_hand(separately, cells, group_of, 3, LEARNING_RATE, per_variable=True)
  finally:
    keras.backend.set_floatx("float32")
  assert model.trainable_variables[0].dtype == "float64"
  for v, w in zip(model.trainable_variables, by_hand.trainable_variables):
    np.testing.assert_allclose(v.numpy(), w.numpy(), rtol=1e-13, atol=1e-15, err_msg=v.path)
  assert (
    max(np.abs(a - b).max() for a, b in zip(model.get_weights(), separately.get_weights())) > 1e-6
  )
  for group, cell in cells.items():
    members = [v for v in model.trainable_variables if group_of(v) == group]
    for position, (state, size) in enumerate(zip(states[group], cell.state_size)):
      if size is None:  # the group's shared memory: one slot
        slot = optimizer.state_slots(members[0])[position]
        assert all(optimizer.state_slots(v)[position] is slot for v in members)
        stored = slot.numpy()
      else:
        stored = np.concatenate(
          [optimizer.state_slots(v)[position].numpy().reshape(-1, size) for v in members]
        )
      np.testing.assert_allclose(stored, state.numpy()[0], rtol=1e-13, atol=1e-15)


def test_ntm_bfgs_refused_above_its_dense_limit_before_allocating():
  model = _model()  # 6*5 + 5 + 5*3 + 3 = 53 coordinates in one group
  optimizer = l2l_tf.LearnedOptimizer(NTMBFGS(hidden_sizes=(4,), max_dense_coordinates=52))
  with pytest.raises(ValueError, match=r"53 coordinates.*Use NTMLBFGS"):
    optimizer.build(model.trainable_variables)
  assert not optimizer.built
  assert all(tuple(v.shape) == () for v in optimizer.variables)  # iterations, learning rate
  at_limit = l2l_tf.LearnedOptimizer(NTMBFGS(hidden_sizes=(4,), max_dense_coordinates=53))
  at_limit.build(model.trainable_variables)
  memory = at_limit.state_slots(model.trainable_variables[0])[-1]
  assert tuple(memory.shape) == (53, 53)


def test_sharing_group_without_some_gradients_is_refused():
  model = _model()
  optimizer = l2l_tf.LearnedOptimizer(_make("gac"))
  grads = [tf.zeros_like(v) for v in model.trainable_variables]
  grads[1] = None
  with pytest.raises(ValueError, match="no gradient for"):
    optimizer.apply(grads, model.trainable_variables)


def test_gradient_accumulation_steps_once_per_period():
  # Two accumulated half batches must give the one full-batch step (a sharing cell, which
  # steps inside Keras's accumulation cond).
  def fitted(batch_size, **kwargs):
    model = _model()
    optimizer = l2l_tf.LearnedOptimizer(_opened("gac"), **kwargs)
    model.compile(optimizer=optimizer, loss=_loss())
    model.fit(X, Y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return model.get_weights()

  accumulated = fitted(len(X) // 2, gradient_accumulation_steps=2)
  full_batch = fitted(len(X))
  assert max(np.abs(a - b).max() for a, b in zip(full_batch, _model().get_weights())) > 1e-4
  for a, b in zip(accumulated, full_batch):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)


def _batches(*batches):
  xs, ys = zip(*batches)
  return tf.data.Dataset.from_tensor_slices((np.concatenate(xs), np.concatenate(ys))).batch(16)


@pytest.mark.parametrize(
  "name,jit_compile", [("lstm", False), ("lstm", True), ("ntm_bfgs", False), ("gac", True)]
)
def test_a_nan_gradient_is_skipped_and_training_continues(name, jit_compile):
  first, second = (X[:16], Y[:16]), (X[16:], Y[16:])
  poisoned = (X[:16].copy(), Y[:16])
  poisoned[0][3, 2] = np.nan  # one NaN input: the loss and the gradients are NaN

  def fit(data):
    model = _model()
    optimizer = l2l_tf.LearnedOptimizer(_like_shipped(name))
    model.compile(optimizer=optimizer, loss=_loss(), jit_compile=jit_compile)
    model.fit(data, epochs=1, shuffle=False, verbose=0)
    return model, optimizer

  model, optimizer = fit(_batches(first, poisoned, second))
  clean, clean_optimizer = fit(_batches(first, second))
  assert int(optimizer.skipped_steps.numpy()) == 1 and int(optimizer.iterations.numpy()) == 3
  assert int(clean_optimizer.skipped_steps.numpy()) == 0
  # The NaN step changed nothing: weights and cell states equal those of a run without it.
  for a, b in zip(
    model.get_weights() + _numpy(_state_variables(optimizer)),
    clean.get_weights() + _numpy(_state_variables(clean_optimizer)),
  ):
    np.testing.assert_array_equal(a, b)
  losses = model.fit(X, Y, batch_size=16, epochs=3, shuffle=False, verbose=0).history["loss"]
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  assert int(optimizer.skipped_steps.numpy()) == 1


def test_a_non_finite_update_is_skipped():
  model = _model()
  initial = model.get_weights()
  optimizer = l2l_tf.LearnedOptimizer(_cell(), learning_rate=np.inf)  # finite gradients
  with tf.GradientTape() as tape:
    loss = _loss()(Y, model(X))
  optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
  assert int(optimizer.skipped_steps.numpy()) == 1
  for a, b in zip(
    model.get_weights() + _numpy(_state_variables(optimizer)),
    initial + [np.zeros(v.shape) for v in _state_variables(optimizer)],
  ):
    np.testing.assert_array_equal(a, b)


def test_mixed_float16(cell):
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    model = _model()
    model.compile(
      optimizer=l2l_tf.LearnedOptimizer(cell, learning_rate=LEARNING_RATE), loss=_loss()
    )
    assert model.layers[0].compute_dtype == "float16"
    initial = [w.copy() for w in model.get_weights()]
    history = model.fit(X, Y, batch_size=16, epochs=2, shuffle=False, verbose=0)
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert np.all(np.isfinite(history.history["loss"]))
  inner = model.optimizer.inner_optimizer  # Keras wraps it in a LossScaleOptimizer
  assert isinstance(inner, l2l_tf.LearnedOptimizer)
  for v, w0 in zip(model.trainable_variables, initial):
    assert v.dtype == "float32" and np.all(np.isfinite(v.numpy()))
    assert np.abs(v.numpy() - w0).max() > 1e-4
    for slot in inner.state_slots(v):
      assert slot.dtype == "float32" and np.all(np.isfinite(slot.numpy()))


_MIRRORED = textwrap.dedent("""
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    import l2l_tf
    from l2l_tf.cells import NTMBFGS
    keras.utils.set_random_seed(0)
    cell = l2l_tf.CoordinatewiseLSTM(hidden_sizes=(4,))
    cell.output_kernel.assign(np.random.default_rng(0).normal(size=(4, 1)).astype("float32"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32); y = rng.integers(0, 3, 64)

    def run(strategy):
      with strategy.scope():
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
        optimizer = l2l_tf.LearnedOptimizer(cell, learning_rate=0.5)
        model.compile(optimizer=optimizer,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        optimizer.build(model.trainable_variables)
      model.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0)
      return model.get_weights(), [s.numpy() for s in optimizer.state_slots(
          model.trainable_variables[0])]

    strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    mirrored_weights, mirrored_states = run(strategy)
    # The same 3 full-batch steps by hand, on one device: the cell on each variable's gradient.
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    states = [cell.get_initial_state((1, int(np.prod(v.shape)))) for v in model.weights]
    for _ in range(3):
      with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x))
      for i, (v, g) in enumerate(zip(model.weights, tape.gradient(loss, model.weights))):
        update, states[i] = cell(tf.reshape(g, [1, -1, 1]), states[i])
        v.assign_add(0.5 * tf.reshape(update, v.shape))
    weights = model.get_weights()
    states = [s.numpy().reshape(m.shape) for s, m in zip(states[0], mirrored_states)]

    # A sharing cell (one instance over all variables, a dense memory slot): mirrored run
    # against the same optimizer on one device.
    def run_sharing(strategy):
      with strategy.scope():
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
        keras.utils.set_random_seed(2)
        ntm = NTMBFGS(hidden_sizes=(4,))
        ntm.read_output_kernel.assign([[0.5]])
        optimizer = l2l_tf.LearnedOptimizer(ntm, learning_rate=0.5)
        model.compile(optimizer=optimizer,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        optimizer.build(model.trainable_variables)
      model.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0)
      return model.get_weights(), [v.numpy() for v in optimizer.variables]

    sharing_mirrored = run_sharing(strategy)
    sharing_one = run_sharing(tf.distribute.get_strategy())
    sharing_diff = lambda i: float(max(np.abs(a - b).max() for a, b in zip(
        sharing_mirrored[i], sharing_one[i])))
    print("RESULT " + json.dumps({
        "sharing_weight_diff": sharing_diff(0), "sharing_state_diff": sharing_diff(1),
        "sharing_memory_max": float(np.abs(sharing_mirrored[1][3]).max()),
        "replicas": strategy.num_replicas_in_sync,
        "weight_diff": float(max(np.abs(a - b).max() for a, b in zip(weights, mirrored_weights))),
        "state_diff": float(max(np.abs(a - b).max() for a, b in zip(states, mirrored_states))),
        "state_max": float(max(np.abs(s).max() for s in mirrored_states))}))
""")


def test_mirrored_strategy_on_two_logical_cpus():
  # Logical devices must be configured before TensorFlow initialises its devices: new process.
  result = subprocess.run(
    [sys.executable, "-c", _MIRRORED],
    capture_output=True,
    text=True,
    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT),
    timeout=180,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  line = [row for row in result.stdout.splitlines() if row.startswith("RESULT ")][-1]
  stats = json.loads(line[len("RESULT ") :])
  assert stats["replicas"] == 2
  assert stats["state_max"] > 1e-3  # slots were updated on the mirrored run
  # Tolerances: replicas' all-reduced gradients differ from the one-device full-batch gradient
  # by float rounding, and log_sign preprocessing multiplies the absolute error of gradients
  # below e^-10 by e^10 (this run has one such coordinate). A wrong replica aggregation
  # (e.g. summed, not averaged, gradients or unsynchronised slots) is off by O(1).
  assert stats["weight_diff"] < 1e-5 and stats["state_diff"] < 1e-3, stats
  assert stats["sharing_memory_max"] > 1e-3  # the NTM memory slot was written
  assert stats["sharing_weight_diff"] < 1e-5 and stats["sharing_state_diff"] < 1e-3, stats
