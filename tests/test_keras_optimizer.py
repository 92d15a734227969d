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
from l2l_tf import io
from l2l_tf import keras_optimizer
from l2l_tf.cells import CoordinatewiseLSTM
from l2l_tf.cells import GlobalAveragingLSTM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEARNING_RATE = 0.7
rng = np.random.default_rng(0)
X = rng.normal(size=(32, 6)).astype(np.float32)
Y = rng.integers(0, 3, 32)


def _cell(seed=0, hidden_sizes=(4, 4)):
  keras.utils.set_random_seed(seed)
  cell = CoordinatewiseLSTM(hidden_sizes=hidden_sizes)
  cell.output_kernel.assign(
      np.random.default_rng(seed).normal(size=(hidden_sizes[-1], 1)).astype(np.float32))
  return cell


def _model(hidden=5):
  keras.utils.set_random_seed(42)
  return keras.Sequential([keras.Input((6,)), keras.layers.Dense(hidden, activation="tanh"),
                           keras.layers.Dense(3)])


def _loss():
  return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _fit(model, steps):
  """`steps` full-batch steps, deterministic order."""
  model.fit(X, Y, batch_size=len(X), epochs=steps, shuffle=False, verbose=0)


def _hand_trained(cell, steps, learning_rate=LEARNING_RATE):
  """The learned step applied by hand: the cell on each variable's gradient [1, n, 1]."""
  model = _model()
  states = {id(v): cell.get_initial_state((1, int(np.prod(v.shape))))
            for v in model.trainable_variables}
  for _ in range(steps):
    with tf.GradientTape() as tape:
      loss = _loss()(Y, model(X))
    grads = tape.gradient(loss, model.trainable_variables)
    for v, g in zip(model.trainable_variables, grads):
      update, states[id(v)] = cell(tf.reshape(g, [1, -1, 1]), states[id(v)])
      v.assign_add(learning_rate * tf.reshape(update, v.shape))
  return model, states


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
      np.testing.assert_allclose(slot.numpy().reshape(-1, state.shape[-1]),
                                 state.numpy()[0], atol=tol, rtol=tol)
  assert int(optimizer.iterations.numpy()) == steps


def test_keras_file_round_trip_continues_identically(cell, tmp_path):
  model = _model()
  model.compile(optimizer=l2l_tf.LearnedOptimizer(cell, learning_rate=LEARNING_RATE),
                loss=_loss())
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
  assert max(np.abs(s.numpy()).max() for s in optimizer.variables[2:]) > 0  # real state
  _fit(model, 2)
  _fit(loaded, 2)
  for a, b in zip(model.get_weights(), loaded.get_weights()):
    np.testing.assert_allclose(a, b, atol=1e-7, rtol=0)


def test_config_carries_weights_and_from_config(cell):
  optimizer = l2l_tf.LearnedOptimizer(cell, learning_rate=0.5, parameter_groups={".*": "all"},
                                      clipnorm=1.0)
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
  io.save_rule(l2l_tf.LearnedUpdateRule(cell), optimizer_dir, {"problem": "test"})
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
  with open(os.path.join(corrupt_weights, "assets", io.WEIGHTS_FILE), "wb") as f:
    f.write(b"PK\x03\x04 truncated zip")
  corrupt_graph = str(tmp_path / "corrupt_graph")
  shutil.copytree(exported, corrupt_graph)
  with open(os.path.join(corrupt_graph, "saved_model.pb"), "wb") as f:
    f.write(b"\x0a\xff\xff\xff\xff\x0fnot a protobuf")
  a_file = tmp_path / "notes.txt"
  a_file.write_text("not a model")
  empty = tmp_path / "empty"
  empty.mkdir()
  cases = {str(tmp_path / "missing"): "does not exist", str(a_file): "not a directory",
           str(empty): "not an l2l_tf optimizer", foreign: "another program",
           corrupt_weights: "weights", corrupt_graph: "corrupt"}
  for path, phrase in cases.items():
    with pytest.raises(io.OptimizerFileError) as info:
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
  deeper = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5), keras.layers.Dense(5),
                             keras.layers.Dense(3)])
  with pytest.raises(ValueError, match="different variables"):
    built(deeper).load_own_variables(dict(store))
  target = built(_model(hidden=5))  # the same variables: accepted
  target.load_own_variables(dict(store))


def test_parameter_groups_map_variables_to_cells():
  kernels, biases = _cell(1, (4, 3)), _cell(2, (2,))
  rule = l2l_tf.LearnedUpdateRule({"kernels": kernels, "biases": biases},
                                  {"kernels": "w", "biases": "b"})
  optimizer = l2l_tf.LearnedOptimizer(rule, parameter_groups={"kernel": "kernels",
                                                              "bias": "biases"})
  model = _model()
  initial = [w.copy() for w in model.get_weights()]
  with tf.GradientTape() as tape:
    loss = _loss()(Y, model(X))
  grads = tape.gradient(loss, model.trainable_variables)
  optimizer.apply(grads, model.trainable_variables)
  for v, g, w0 in zip(model.trainable_variables, grads, initial):
    group_cell = kernels if "kernel" in v.path else biases
    assert [s.shape[-1] for s in optimizer.state_slots(v)] == list(group_cell.state_size)
    update, _ = group_cell(tf.reshape(g, [1, -1, 1]),
                           group_cell.get_initial_state((1, int(np.prod(v.shape)))))
    np.testing.assert_allclose(v.numpy(), w0 + tf.reshape(update, v.shape).numpy(),
                               atol=1e-6, rtol=1e-6)
  with pytest.raises(ValueError, match="no group"):
    l2l_tf.LearnedOptimizer(rule, parameter_groups={"kernel": "kernels"}).build(
        _model().trainable_variables)
  with pytest.raises(ValueError, match="does not have"):
    l2l_tf.LearnedOptimizer(rule, parameter_groups={".*": "nope"})


def test_refuses_cells_that_share_across_coordinates():
  with pytest.raises(ValueError, match="shares information across coordinates"):
    l2l_tf.LearnedOptimizer(GlobalAveragingLSTM(hidden_sizes=(4,)))
  assert keras_optimizer.is_coordinatewise(CoordinatewiseLSTM(hidden_sizes=(2,)))


def test_mixed_float16(cell):
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    model = _model()
    model.compile(optimizer=l2l_tf.LearnedOptimizer(cell, learning_rate=LEARNING_RATE),
                  loss=_loss())
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
    print("RESULT " + json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "weight_diff": float(max(np.abs(a - b).max() for a, b in zip(weights, mirrored_weights))),
        "state_diff": float(max(np.abs(a - b).max() for a, b in zip(states, mirrored_states))),
        "state_max": float(max(np.abs(s).max() for s in mirrored_states))}))
""")


def test_mirrored_strategy_on_two_logical_cpus():
  # Logical devices must be configured before TensorFlow initialises its devices: new process.
  result = subprocess.run([sys.executable, "-c", _MIRRORED], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT),
                          timeout=180, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  line = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")][-1]
  stats = json.loads(line[len("RESULT "):])
  assert stats["replicas"] == 2
  assert stats["state_max"] > 1e-3  # slots were updated on the mirrored run
  # Tolerances: replicas' all-reduced gradients differ from the one-device full-batch gradient
  # by float rounding, and log_sign preprocessing multiplies the absolute error of gradients
  # below e^-10 by e^10 (this run has one such coordinate). A wrong replica aggregation
  # (e.g. summed, not averaged, gradients or unsynchronised slots) is off by O(1).
  assert stats["weight_diff"] < 1e-5 and stats["state_diff"] < 1e-3, stats
