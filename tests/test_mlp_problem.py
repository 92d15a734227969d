"""The MLP optimizee itself: its loss against a NumPy forward pass, its instances, its data."""

import numpy as np
import pytest
import tensorflow as tf

from l2l_tf.problems import mlp

NP_ACTIVATIONS = {
  "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
  "relu": lambda z: np.maximum(z, 0),
  "tanh": np.tanh,
}


def _problem(activation, hidden_sizes=(5, 4), batch_size=2, num_examples=30):
  rng = np.random.default_rng(0)
  images = rng.normal(size=(num_examples, 7))
  labels = rng.integers(0, 3, size=num_examples)
  return mlp.MLPClassificationProblem(
    images,
    labels,
    hidden_sizes=hidden_sizes,
    activation=activation,
    num_classes=3,
    minibatch_size=6,
    batch_size=batch_size,
    init_stddev=0.5,
    dtype="float64",
  )


def _numpy_loss(problem, params, indices):
  """Mean softmax cross-entropy per instance, computed by hand."""
  losses = []
  for b in range(problem.batch_size):
    x = problem.images.numpy()[indices[b]]
    y = problem.labels.numpy()[indices[b]]
    num_layers = len(problem.layer_sizes) - 1
    for layer in range(num_layers):
      x = x @ params[f"layer_{layer}/w"][b].numpy() + params[f"layer_{layer}/b"][b].numpy()
      if layer < num_layers - 1:
        x = NP_ACTIVATIONS[problem.activation](x)
    x = x - x.max(axis=1, keepdims=True)
    log_softmax = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    losses.append(-log_softmax[np.arange(len(y)), y].mean())
  return np.array(losses)


@pytest.mark.parametrize("activation", sorted(mlp.ACTIVATIONS))
def test_loss_is_the_softmax_cross_entropy_of_the_network(activation):
  problem = _problem(activation)
  params = problem.init_params(3)
  indices = np.array([[0, 4, 9, 11, 20, 29], [1, 1, 2, 3, 5, 8]])
  loss = problem.loss(params, {"indices": tf.constant(indices)}).numpy()
  np.testing.assert_allclose(loss, _numpy_loss(problem, params, indices), rtol=1e-10)
  assert loss.shape == (2,)


def test_instances_are_independent():
  problem = _problem("sigmoid")
  params = problem.init_params(3)
  indices = tf.constant([[0, 1, 2, 3, 4, 5]] * 2)
  before = problem.loss(params, {"indices": indices}).numpy()
  changed = dict(params)
  changed["layer_0/w"] = tf.concat([params["layer_0/w"][:1], params["layer_0/w"][1:] + 1.0], 0)
  after = problem.loss(changed, {"indices": indices}).numpy()
  assert after[0] == before[0] and after[1] != before[1]


def test_parameters_and_minibatches_are_deterministic_per_seed():
  problem = _problem("relu", hidden_sizes=(6,))
  shapes = {k: tuple(v.shape) for k, v in problem.init_params(0).items()}
  assert shapes == {
    "layer_0/w": (2, 7, 6),
    "layer_0/b": (2, 6),
    "layer_1/w": (2, 6, 3),
    "layer_1/b": (2, 3),
  }
  first, again, other = (problem.sample_batches(s, 4)["indices"].numpy() for s in (1, 1, 2))
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)
  # One minibatch per step and one for the loss after the last step.
  assert first.shape == (4 + 1, 2, 6) and first.min() >= 0 and first.max() < 30
  a, b = (problem.init_params(s)["layer_0/w"].numpy() for s in (1, 2))
  assert not np.array_equal(a, b)


@pytest.mark.parametrize(
  "kwargs,message",
  [
    ({"activation": "swish"}, "Unknown activation"),
    ({"hidden_sizes": ()}, "hidden_sizes"),
    ({"hidden_sizes": (4, 0)}, "hidden_sizes"),
  ],
)
def test_bad_networks_are_refused(kwargs, message):
  with pytest.raises(ValueError, match=message):
    mlp.MLPClassificationProblem(np.zeros((4, 3)), np.zeros(4, int), **kwargs)
