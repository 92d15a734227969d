"""Tests of the CIFAR convnet optimizee, its two optimizer networks, the CIFAR problems of the
registry (binary files from conftest.py's cifar_dir, tfds mocked), the same convnet on MNIST
digits (the embedded sample) and KerasModelProblem."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from l2l_tf import learned_rule
from l2l_tf import registry
from l2l_tf.problems import convnet
from l2l_tf.problems.keras_model import KerasModelProblem
from l2l_tf.training import meta_trainer
from l2l_tf.training import unroll as unroll_lib

CONV_NAMES = [f"conv_{i}/{k}" for i in range(3) for k in ("w", "gamma", "beta")]
FC_NAMES = ["fc_0/w", "fc_0/gamma", "fc_0/beta", "fc_1/w", "fc_1/b"]


def _images(n, seed=0, size=32):
  rng = np.random.default_rng(seed)
  return (rng.random((n, size, size, 3), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32))


def _first(batches):
  return tf.nest.map_structure(lambda t: t[0], batches)


# ------------------------------------------------------------------ the CIFAR convnet


def test_convnet_parameter_names_and_shapes():
  problem = convnet.ConvNetClassificationProblem(*_images(20), batch_size=2, minibatch_size=8)
  params = problem.init_params(0)
  expected = {
    "conv_0/w": [2, 3, 3, 3, 16],
    "conv_0/gamma": [2, 16],
    "conv_0/beta": [2, 16],
    "conv_1/w": [2, 3, 3, 16, 16],
    "conv_1/gamma": [2, 16],
    "conv_1/beta": [2, 16],
    "conv_2/w": [2, 3, 3, 16, 16],
    "conv_2/gamma": [2, 16],
    "conv_2/beta": [2, 16],
    "fc_0/w": [2, 256, 32],
    "fc_0/gamma": [2, 32],
    "fc_0/beta": [2, 32],
    "fc_1/w": [2, 32, 10],
    "fc_1/b": [2, 10],
  }
  assert {k: v.shape.as_list() for k, v in params.items()} == expected
  assert problem.num_coordinates() == sum(int(np.prod(s[1:])) for s in expected.values())
  # Deterministic per seed, different across seeds and across instances.
  again, other = problem.init_params(0), problem.init_params(1)
  np.testing.assert_array_equal(params["conv_1/w"], again["conv_1/w"])
  assert not np.allclose(params["conv_1/w"], other["conv_1/w"])
  assert not np.allclose(params["conv_1/w"][0], params["conv_1/w"][1])
  batches = problem.sample_batches(3, num_steps=4)
  assert batches["indices"].shape == (5, 2, 8)


def test_convnet_matches_keras_layers():
  """The functional network equals the same architecture built from Keras layers, with batch
  norm in training mode (minibatch statistics) -- including the flatten order."""
  images, labels = _images(16)
  problem = convnet.ConvNetClassificationProblem(images, labels, minibatch_size=16)
  params = problem.init_params(7)
  layers = []
  for _ in range(3):
    layers += [
      keras.layers.Conv2D(16, 3, padding="same", use_bias=False),
      keras.layers.BatchNormalization(epsilon=1e-3),
      keras.layers.ReLU(),
      keras.layers.MaxPooling2D(2, padding="same"),
    ]
  layers += [
    keras.layers.Flatten(),
    keras.layers.Dense(32, use_bias=False),
    keras.layers.BatchNormalization(epsilon=1e-3),
    keras.layers.ReLU(),
    keras.layers.Dense(10),
  ]
  model = keras.Sequential([keras.Input((32, 32, 3))] + layers)
  weights = []
  for i in range(3):
    weights += [
      params[f"conv_{i}/w"][0],
      params[f"conv_{i}/gamma"][0] * 1.5,
      params[f"conv_{i}/beta"][0] + 0.1,
    ]
  weights += [
    params["fc_0/w"][0],
    params["fc_0/gamma"][0] * 0.5,
    params["fc_0/beta"][0] - 0.2,
    params["fc_1/w"][0],
    params["fc_1/b"][0] + 0.3,
  ]
  for variable, value in zip(model.trainable_variables, weights):
    variable.assign(value)
  mine = dict(params)
  for i in range(3):
    mine[f"conv_{i}/gamma"] = params[f"conv_{i}/gamma"] * 1.5
    mine[f"conv_{i}/beta"] = params[f"conv_{i}/beta"] + 0.1
  mine.update(
    {
      "fc_0/gamma": params["fc_0/gamma"] * 0.5,
      "fc_0/beta": params["fc_0/beta"] - 0.2,
      "fc_1/b": params["fc_1/b"] + 0.3,
    }
  )
  expected = model(images, training=True)
  got = problem.logits(mine, images[None])[0]
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  loss = problem.loss(mine, {"indices": tf.range(16)[None]})
  reference = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, expected)
  np.testing.assert_allclose(loss[0], reference, rtol=1e-5)


def test_convnet_instances_are_independent():
  """batch_size networks in one grouped conv give each instance's own single-network loss."""
  images, labels = _images(40)
  batched = convnet.ConvNetClassificationProblem(images, labels, batch_size=3, minibatch_size=8)
  single = convnet.ConvNetClassificationProblem(images, labels, batch_size=1, minibatch_size=8)
  params = batched.init_params(2)
  batch = _first(batched.sample_batches(2, 1))
  losses = batched.loss(params, batch).numpy()
  for b in range(3):
    alone = single.loss(
      {k: v[b : b + 1] for k, v in params.items()}, {"indices": batch["indices"][b : b + 1]}
    )
    np.testing.assert_allclose(losses[b], alone[0], rtol=1e-5)


def test_convnet_loss_finite_and_every_parameter_has_a_gradient():
  problem = convnet.ConvNetClassificationProblem(*_images(30), batch_size=2, minibatch_size=8)
  params = problem.init_params(0)
  losses, grads = unroll_lib.value_and_grad(problem, params, _first(problem.sample_batches(0, 1)))
  assert losses.shape == (2,) and np.all(np.isfinite(losses))
  assert set(grads) == set(params)
  for name, grad in grads.items():
    assert grad is not None, name
    assert np.all(np.isfinite(grad)), name
    for b in range(2):  # each instance's every parameter tensor gets a nonzero gradient
      assert float(tf.reduce_max(tf.abs(grad[b]))) > 0, (name, b)


def test_batch_norm_uses_minibatch_statistics():
  # The batch-norm function: shifting its input by a per-channel constant changes nothing,
  # and its output has the minibatch's mean beta and standard deviation gamma.
  x = tf.random.stateless_normal([8, 5, 5, 4], [1, 2])
  gamma, beta = tf.constant([1.0, 2.0, 0.5, 3.0]), tf.constant([0.0, 1.0, -1.0, 2.0])
  out, _ = convnet.batch_norm(x, gamma, beta, axes=[0, 1, 2])
  shifted, _ = convnet.batch_norm(
    x + tf.constant([3.0, -7.0, 0.5, 100.0]), gamma, beta, axes=[0, 1, 2]
  )
  np.testing.assert_allclose(shifted, out, atol=2e-4)
  np.testing.assert_allclose(tf.reduce_mean(out, [0, 1, 2]), beta, atol=1e-4)
  np.testing.assert_allclose(tf.math.reduce_std(out, [0, 1, 2]), gamma, rtol=1e-3)

  # In the network: a conv layer's scale does not change the loss (the minibatch statistics
  # absorb it) unless the statistics are frozen; an example's logits depend on the rest of
  # its minibatch.
  images, labels = _images(16)
  problem = convnet.ConvNetClassificationProblem(
    images, labels, minibatch_size=16, batch_norm_epsilon=0.0
  )
  params = problem.init_params(0)
  x = images[None]
  frozen = problem.batch_norm_statistics(params, x)
  scaled = dict(params, **{"conv_1/w": params["conv_1/w"] * 4.0})
  np.testing.assert_allclose(problem.logits(scaled, x), problem.logits(params, x), atol=1e-4)
  assert not np.allclose(
    problem.logits(scaled, x, frozen), problem.logits(params, x, frozen), atol=1e-2
  )
  np.testing.assert_allclose(
    problem.logits(params, x, frozen), problem.logits(params, x), atol=1e-4
  )  # statistics of the same set: the same network
  other = np.concatenate([images[:1], images[1:] * 0.5 + 0.25])[None]
  assert not np.allclose(
    problem.logits(params, other)[0, 0], problem.logits(params, x)[0, 0], atol=1e-3
  )
  np.testing.assert_allclose(
    problem.logits(params, other[:, :1], frozen)[0, 0],
    problem.logits(params, x, frozen)[0, 0],
    atol=1e-5,
  )
  loss, accuracy = problem.evaluate(params, images, labels, frozen)
  assert loss.shape == (1,) and 0.0 <= float(accuracy[0]) <= 1.0


# ------------------------------------------------------------------ two optimizer networks


def test_two_network_assignment_covers_every_parameter_once():
  problem = convnet.ConvNetClassificationProblem(*_images(20), minibatch_size=8)
  params = problem.init_params(0)
  rule = learned_rule.make_rule("lstm", "cifar10")
  groups = rule.groups.assign(list(params))
  assert groups == {"conv": CONV_NAMES, "fc": FC_NAMES}
  assert sorted(groups["conv"] + groups["fc"]) == sorted(params)
  # Two separate networks: no weight is shared between them.
  conv_ids = {id(v) for v in rule.cells["conv"].trainable_variables}
  fc_ids = {id(v) for v in rule.cells["fc"].trainable_variables}
  assert conv_ids and fc_ids and not conv_ids & fc_ids
  # One step moves every parameter, and each network's state covers its own coordinates.
  grads = unroll_lib.value_and_grad(problem, params, _first(problem.sample_batches(0, 1)))[1]
  state = rule.init_state(params)
  conv_size = sum(int(np.prod(params[n].shape[1:])) for n in CONV_NAMES)
  assert state["conv"][0].shape[:2] == (1, conv_size)
  assert state["fc"][0].shape[:2] == (1, problem.num_coordinates() - conv_size)
  new_params, _ = rule.step(params, grads, state)
  for name in params:
    assert np.any(new_params[name].numpy() != params[name].numpy()), name  # updates ~1e-6


def test_unmatched_or_doubly_matched_parameter_is_refused():
  names = list(
    convnet.ConvNetClassificationProblem(*_images(4), minibatch_size=2).parameter_shapes()
  )
  with pytest.raises(ValueError, match=r"'fc_1/b' is matched by no group"):
    learned_rule.ParameterGroups({"conv": r"^conv_", "fc": r"^fc_\d+/(w|gamma|beta)$"}).assign(
      names
    )
  with pytest.raises(ValueError, match=r"'conv_0/w' is matched by 2 groups"):
    learned_rule.ParameterGroups({"conv": r"^conv_", "fc": r"^fc_", "w": r"^conv_0/w"}).assign(
      names
    )
  with pytest.raises(ValueError, match=r"'extra/w' is matched by no group"):
    learned_rule.ParameterGroups(convnet.CONVNET_PARAMETER_GROUPS).assign(names + ["extra/w"])


# ------------------------------------------------------------------ CIFAR through the registry


def _original_classes(problem):
  """The dataset class of each example, read back from the pixels the test wrote."""
  return np.round((problem.images.numpy()[:, 0, 0, 0] * 255 - 5) / 20).astype(int)


@pytest.mark.parametrize(
  "name,split,labels,classes",
  [
    ("cifar10", "test", None, range(10)),
    ("cifar5", "train", None, range(5)),
    ("cifar5", "test", None, range(5)),
    ("cifar2", "validation", None, range(2)),
    ("cifar5", "train", convnet.CIFAR_HELD_OUT_LABELS["cifar5"], range(5, 10)),  # LSTM-sub
    ("cifar2", "train", convnet.CIFAR_HELD_OUT_LABELS["cifar2"], range(2, 10)),
    ("cifar10", "train", [7, 3], [7, 3]),
  ],
)
def test_cifar_label_subsets_hold_only_their_classes(cifar_dir, name, split, labels, classes):
  problem = registry.make_problem(
    name, split, dataset_source="binary", data_dir=cifar_dir, labels=labels
  )
  classes = list(classes)
  original = _original_classes(problem)
  assert set(original) <= set(classes) and len(original) > 0
  if split != "validation":  # every wanted class is there (validation is a 10% sample)
    assert set(original) == set(classes)
  # Renumbered 0..k-1 in the order given, and the classifier has k outputs.
  np.testing.assert_array_equal(problem.labels.numpy(), [classes.index(c) for c in original])
  assert problem.num_classes == len(classes) and problem.name == name
  assert problem.init_params(0)["fc_1/w"].shape[-1] == len(classes)
  assert problem.get_config()["class_ids"] == classes


def test_cifar_splits_and_loss(cifar_dir):
  train = registry.make_problem("cifar5", "train", dataset_source="binary", data_dir=cifar_dir)
  validation = registry.make_problem(
    "cifar5", "validation", dataset_source="binary", data_dir=cifar_dir
  )
  assert train.images.shape[0] + validation.images.shape[0] == 50  # 5 files x 20, half kept
  losses = train.loss(train.init_params(0), _first(train.sample_batches(0, 1)))
  assert losses.shape == (1,) and np.isfinite(losses[0])


@pytest.mark.parametrize(
  "kwargs,message",
  [
    ({"labels": []}, "at least one"),
    ({"labels": [0, 10]}, "0..9"),
    ({"labels": [1, 1]}, "duplicates"),
    ({"dataset_source": "embedded"}, "no embedded CIFAR"),
  ],
)
def test_cifar_bad_arguments_refused(cifar_dir, kwargs, message):
  kwargs = dict({"dataset_source": "binary", "data_dir": cifar_dir}, **kwargs)
  with pytest.raises(ValueError, match=message):
    registry.make_problem("cifar5", "train", **kwargs)


def test_cifar10_from_mocked_tfds():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=24):
    problem = registry.make_problem("cifar10", "test", dataset_source="tfds")
    subset = registry.make_problem("cifar2", "test", dataset_source="tfds")
  assert problem.images.shape == (24, 32, 32, 3) and problem.images.dtype == tf.float32
  assert 0.0 <= float(tf.reduce_min(problem.images)) and float(tf.reduce_max(problem.images)) <= 1
  labels = problem.labels.numpy()
  assert labels.min() >= 0 and labels.max() <= 9
  assert set(subset.labels.numpy()) <= {0, 1}
  assert subset.images.shape[0] == int(np.isin(labels, [0, 1]).sum())
  losses = problem.loss(problem.init_params(0), {"indices": tf.range(8)[None]})
  assert np.isfinite(losses[0])


# ------------------------------------------------------------------ the convnet on MNIST digits


def test_mnist_convnet_reads_the_mnist_splits_as_28x28_images():
  for split in registry.SPLITS:
    problem = registry.make_problem("mnist_convnet", split)
    mlp_problem = registry.make_problem("mnist", split)  # the same loader and 90/10 split
    n = problem.images.shape[0]
    assert problem.images.shape == (n, 28, 28, 1) and n > 0
    # The MLP's digits in the same order, each row-major [784] vector as a 28x28 image.
    np.testing.assert_array_equal(problem.images.numpy().reshape(n, 784), mlp_problem.images)
    np.testing.assert_array_equal(problem.labels, mlp_problem.labels)
    assert set(problem.labels.numpy()) == set(range(10))
    assert problem.num_classes == 10 and problem.name == "mnist_convnet"
    assert problem.flat_size == 4 * 4 * 16  # 28 -> 14 -> 7 -> 4 after three 2x2 poolings
    assert problem.init_params(0)["fc_1/w"].shape == (1, 32, 10)


def test_mnist_convnet_gets_the_two_optimizer_networks_but_is_not_cifar():
  assert "mnist_convnet" not in registry.CIFAR_PROBLEMS  # --labels stays CIFAR-only
  rule = learned_rule.make_rule("lstm", "mnist_convnet")
  problem = registry.make_problem("mnist_convnet", "validation")
  assert rule.groups.assign(list(problem.init_params(0))) == {"conv": CONV_NAMES, "fc": FC_NAMES}


def test_mnist_convnet_starts_near_chance_and_sgd_lowers_its_loss():
  problem = registry.make_problem("mnist_convnet", "train", 3)
  images, labels = problem.images[:512], problem.labels[:512]
  params = problem.init_params(0)
  initial, _ = problem.evaluate(params, images, labels)
  # Chance level; fan-in scaled random logits put it a little above log(10) (2.45-2.58 here).
  np.testing.assert_allclose(initial, np.log(10.0), atol=0.4)
  batches = problem.sample_batches(0, num_steps=20)
  for step in range(20):
    _, grads = unroll_lib.value_and_grad(
      problem, params, tf.nest.map_structure(lambda t, i=step: t[i], batches)
    )
    params = {name: value - 0.1 * grads[name] for name, value in params.items()}
  final, _ = problem.evaluate(params, images, labels)
  assert np.all(final.numpy() < 0.6 * initial.numpy()), (initial, final)  # 1.02-1.08 here


# ------------------------------------------------------------------ any Keras model


def _xy(n=64, features=6, classes=3, seed=0):
  rng = np.random.default_rng(seed)
  return (
    rng.normal(size=(n, features)).astype(np.float32),
    rng.integers(0, classes, n).astype(np.int32),
  )


def _mlp(batch_norm=False, dropout=False):
  layers = [
    keras.Input((6,)),
    keras.layers.Dense(8, activation="tanh", kernel_regularizer="l2", name="hidden"),
  ]
  if batch_norm:
    layers.append(keras.layers.BatchNormalization(name="bn"))
  if dropout:
    layers.append(keras.layers.Dropout(0.5))
  layers.append(keras.layers.Dense(3, name="logits"))
  return keras.Sequential(layers)


def _model_loss_and_grads(model, loss_fn, x, y):
  with tf.GradientTape() as tape:
    value = loss_fn(y, model(x, training=True)) + sum(model.losses)
  grads = tape.gradient(value, model.trainable_variables)
  return float(value), {v.path: g for v, g in zip(model.trainable_variables, grads)}


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("loss", ["instance", "name"])
def test_keras_problem_loss_and_gradients_equal_the_models(batch_norm, loss):
  x, y = _xy()
  model = _mlp(batch_norm)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  problem = KerasModelProblem(
    model,
    x,
    y,
    minibatch_size=16,
    loss=loss_fn if loss == "instance" else keras.losses.sparse_categorical_crossentropy,
  )
  params = problem.init_params(0)
  assert list(params) == [v.path for v in model.trainable_variables]
  for v in model.trainable_variables:
    np.testing.assert_array_equal(params[v.path][0], v.numpy())
  before = [v.numpy() for v in model.non_trainable_variables]
  indices = tf.constant([[3, 1, 4, 1, 5, 9, 2, 6, 53, 58, 9, 7, 9, 3, 2, 38]])
  losses, grads = unroll_lib.value_and_grad(problem, params, {"indices": indices})
  # The problem never writes the model's variables (BN moving statistics included).
  for value, v in zip(before, model.non_trainable_variables):
    np.testing.assert_array_equal(value, v.numpy())
  if loss == "name":  # a per-example function: the problem averages it

    def loss_fn(targets, predictions):
      return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(targets, predictions))

  expected, expected_grads = _model_loss_and_grads(model, loss_fn, x[indices[0]], y[indices[0]])
  np.testing.assert_allclose(losses[0], expected, rtol=1e-5)
  assert set(grads) == set(expected_grads)
  for name, grad in expected_grads.items():
    np.testing.assert_allclose(grads[name][0], grad, rtol=1e-4, atol=1e-6, err_msg=name)


def test_keras_problem_reinitialize_and_callable_init():
  x, y = _xy()
  model = _mlp(batch_norm=True)
  problem = KerasModelProblem(
    model, x, y, loss="sparse_categorical_crossentropy", batch_size=2, init="reinitialize"
  )
  a, b, c = problem.init_params(5), problem.init_params(5), problem.init_params(6)
  kernel = model.trainable_variables[0].path
  np.testing.assert_array_equal(a[kernel], b[kernel])  # reproducible per seed
  assert not np.allclose(a[kernel], c[kernel])  # new weights per seed
  assert not np.allclose(a[kernel][0], a[kernel][1])  # and per instance
  assert not np.allclose(a[kernel][0], model.trainable_variables[0].numpy())
  gamma = [v.path for v in model.trainable_variables if v.name == "gamma"][0]
  np.testing.assert_array_equal(a[gamma], np.ones((2, 8)))  # the layer's own initializer

  seen = []

  def init(seed):
    seen.append(seed)
    return [np.full(v.shape, seed, np.float32) for v in model.trainable_variables]

  custom = KerasModelProblem(
    model, x, y, loss="sparse_categorical_crossentropy", batch_size=2, init=init
  )
  params = custom.init_params(3)
  assert seen == [6, 7]
  np.testing.assert_array_equal(params[kernel][1], np.full((6, 8), 7.0))


def test_keras_problem_dropout_masks_change_per_step_but_not_per_seed():
  x, y = _xy()
  problem = KerasModelProblem(
    _mlp(dropout=True),
    x,
    y,
    minibatch_size=16,
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
  )
  params = problem.init_params(0)
  batches = problem.sample_batches(0, 2)
  assert batches["seed_states"].shape == (3, 1, 1, 2)
  same_data = dict(batches, indices=tf.broadcast_to(batches["indices"][:1], [3, 1, 16]))
  step = lambda t: float(problem.loss(params, {k: v[t] for k, v in same_data.items()})[0])
  assert step(0) != step(1)  # same minibatch, a new dropout mask
  assert step(0) == step(0)
  np.testing.assert_array_equal(batches["seed_states"], problem.sample_batches(0, 2)["seed_states"])


def test_keras_problem_from_tf_data_matches_arrays():
  x, y = _xy(40)
  model = _mlp()
  from_arrays = KerasModelProblem(model, x, y, loss="sparse_categorical_crossentropy")
  dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
  from_dataset = KerasModelProblem(model, dataset, loss="sparse_categorical_crossentropy")
  np.testing.assert_array_equal(from_dataset.x, x)
  np.testing.assert_array_equal(from_dataset.y, y)
  batch = _first(from_arrays.sample_batches(0, 1))
  params = from_arrays.init_params(0)
  np.testing.assert_allclose(from_dataset.loss(params, batch), from_arrays.loss(params, batch))
  unbatched = KerasModelProblem(
    model, tf.data.Dataset.from_tensor_slices((x, y)), loss="sparse_categorical_crossentropy"
  )
  assert unbatched.num_examples == 40


def test_learned_rule_unrolls_and_meta_trains_on_a_keras_model(tmp_path):
  x, y = _xy()
  model = _mlp(batch_norm=True)
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  problem = KerasModelProblem(
    model, x, y, loss=loss, minibatch_size=16, batch_size=2, init="reinitialize"
  )
  rule = learned_rule.LearnedUpdateRule(
    {"hidden": registry.make_cell("lstm", "keras"), "out": registry.make_cell("lstm", "keras")},
    {"hidden": r"/(hidden|bn)/", "out": r"/logits/"},
  )
  config = meta_trainer.MetaTrainingConfig(
    num_steps=4, unroll_length=2, epochs=1, trajectories_per_epoch=1, jit_compile="false"
  )
  trainer = meta_trainer.MetaTrainer(rule, problem, problem, config, log=lambda _: None)
  before = [v.numpy() for v in rule.trainable_variables]
  objective, skipped = trainer.train_trajectory(seed=11)  # 2 unrolls of 2 steps, 2 instances
  assert np.isfinite(objective) and skipped == 0
  assert 0.2 < objective < 10  # a mean cross-entropy of 3 classes, not a sum or a zero
  after = [v.numpy() for v in rule.trainable_variables]
  assert any(not np.allclose(a, b) for a, b in zip(before, after))  # both cells: meta-gradient
  hidden = len(rule.cells["hidden"].trainable_variables)
  assert any(not np.allclose(a, b) for a, b in zip(before[:hidden], after[:hidden]))
  assert any(not np.allclose(a, b) for a, b in zip(before[hidden:], after[hidden:]))


def test_keras_problem_bad_inputs_refused():
  x, y = _xy()
  model = _mlp()
  loss = "sparse_categorical_crossentropy"
  unbuilt = keras.Sequential([keras.layers.Dense(3)])
  with pytest.raises(ValueError, match="not built"):
    KerasModelProblem(unbuilt, x, y, loss=loss)
  with pytest.raises(TypeError, match="keras.Model"):
    KerasModelProblem(lambda t: t, x, y, loss=loss)
  with pytest.raises(ValueError, match="same number of examples"):
    KerasModelProblem(model, x, y[:10], loss=loss)
  with pytest.raises(ValueError, match="empty"):
    KerasModelProblem(model, x[:0], y[:0], loss=loss)
  with pytest.raises(ValueError, match="Unknown loss 'no_such_loss'"):
    KerasModelProblem(model, x, y, loss="no_such_loss")
  with pytest.raises(ValueError, match="fails on the first examples"):
    KerasModelProblem(
      model, x, np.eye(5, dtype=np.float32)[y % 5], loss="categorical_crossentropy"
    )  # 3 outputs, 5-wide targets
  with pytest.raises(ValueError, match="Pass loss="):
    KerasModelProblem(model, x, y)
  with pytest.raises(ValueError, match="init must be"):
    KerasModelProblem(model, x, y, loss=loss, init="random")
  with pytest.raises(ValueError, match="batch_size must be positive"):
    KerasModelProblem(model, x, y, loss=loss, batch_size=0)
  with pytest.raises(ValueError, match="minibatch_size"):
    KerasModelProblem(model, x, y, loss=loss, minibatch_size=0)
  dataset = tf.data.Dataset.from_tensor_slices((x, y))
  with pytest.raises(ValueError, match="infinite"):
    KerasModelProblem(model, dataset.repeat(), loss=loss)
  with pytest.raises(ValueError, match="more than max_examples=50"):
    KerasModelProblem(model, dataset.batch(8), loss=loss, max_examples=50)
  with pytest.raises(ValueError, match="more than max_examples=50"):  # unknown cardinality
    KerasModelProblem(model, dataset.repeat().filter(lambda a, b: True), loss=loss, max_examples=50)
  with pytest.raises(ValueError, match=r"\(x, y\) pairs"):
    KerasModelProblem(model, tf.data.Dataset.from_tensor_slices(x), loss=loss)
  with pytest.raises(ValueError, match="pass y=None"):
    KerasModelProblem(model, dataset, y, loss=loss)
  wrong = KerasModelProblem(model, x, y, loss=loss, init=lambda seed: [np.zeros((2, 2))])
  with pytest.raises(ValueError, match="gave 1 weights"):
    wrong.init_params(0)
  misshapen = KerasModelProblem(
    model,
    x,
    y,
    loss=loss,
    init=lambda seed: {v.path: np.zeros((1,) + tuple(v.shape)) for v in model.trainable_variables},
  )
  with pytest.raises(ValueError, match="has shape"):
    misshapen.init_params(0)
