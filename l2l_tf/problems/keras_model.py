"""Any built Keras model as an optimizee, through Keras 3's Model.stateless_call.

    problem = KerasModelProblem(model, x_train, y_train, loss="sparse_categorical_crossentropy")
    rule = LearnedUpdateRule(make_cell("lstm", "keras"))
    trainer = MetaTrainer(rule, problem, validation_problem, MetaTrainingConfig(...))

stateless_call(trainable_values, non_trainable_values, x, training=...) runs the model as a
pure function of its weights, so the learned optimizer steps plain tensors and the model's
own variables are never written: meta-training and evaluation leave `model` untouched.

Parameters are named by the variables' paths ("sequential/dense/kernel", ...), so
ParameterGroups patterns can route layers to different optimizer networks. Each has a
leading axis of batch_size independent instances.

Semantics, in one place:
  * The loss of one step is `loss(y, model(x, training))` on a minibatch of
    `minibatch_size` examples drawn with replacement, plus the model's own losses
    (regularizers, add_loss) from that call -- what model.fit minimises.
  * training=True (the default) runs layers in training mode: BatchNormalization uses the
    minibatch statistics, Dropout drops. Pass training=False to use inference behaviour.
  * Non-trainable state (BatchNormalization moving statistics, Metric state) is snapshot
    when the problem is built and kept fixed: every step of every trajectory starts from the
    same values, and the updates stateless_call returns are discarded. With training=True
    batch norm's output does not depend on its moving statistics, so the training loss is
    unaffected; with training=False they are the fixed statistics of the snapshot.
  * Random layers (Dropout, GaussianNoise, ...) draw from Keras seed generators, which are
    non-trainable state too; instead of repeating one mask, each step and instance gets its
    own seed state from sample_batches, so masks differ per step yet are reproducible per
    seed.
  * init="model": every seed and instance starts from the model's weights as they were when
    the problem was built (seeds then differ only in their minibatches and dropout masks).
    init="reinitialize": each instance of each seed gets fresh weights from the layers' own
    initializers, made deterministic by giving every seedable Keras initializer in the layer
    configs a seed derived from (seed, instance) -- the model is cloned with
    keras.models.clone_model, so this needs a Sequential or Functional model whose layers
    serialise (get_config); initializers that take no seed (custom ones) are not
    reproducible. init=callable: init(instance_seed) returns the weights of one instance,
    as a list in model.trainable_variables order or a {path: array} dict.
  * batch_size > 1 runs the instances one after another inside the graph (a Python loop over
    stateless_call): correct for any model, with graph size and time linear in batch_size.
  * Data are kept in memory as tensors (minibatches are gathered from pre-sampled indices,
    so a whole unroll's data is ready before it starts). A tf.data.Dataset must be finite
    and yield (x, y) pairs; it is read once, up to max_examples examples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from l2l_tf.problems import base

# A model input or target: an array, or a nested structure of arrays for multi-input models.
NestedArrays = Any
# init=callable: one instance's weights, in model.trainable_variables order or by path.
WeightsInit = Callable[[int], Sequence[base.ArrayLike] | Mapping[str, base.ArrayLike]]
LossLike = str | keras.losses.Loss | Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

INITS = ("model", "reinitialize")
_SEED_STATE = "seed_generator_state"  # the name Keras gives SeedGenerator state variables
_MAX_SEED = 2**31 - 1


def materialize_dataset(
  dataset: tf.data.Dataset, max_examples: int
) -> tuple[NestedArrays, NestedArrays]:
  """Reads a finite tf.data.Dataset of (x, y) into (x, y) numpy structures.

  A dataset whose components all have an unknown leading dimension (what .batch() makes) is
  taken as batched and unbatched first; pass dataset.unbatch() for one batched with
  drop_remainder=True.
  """
  spec = dataset.element_spec
  if not (isinstance(spec, tuple) and len(spec) == 2):
    raise ValueError(
      "A tf.data.Dataset optimizee must yield (x, y) pairs; got elements "
      f"{spec} (sample weights are not supported)"
    )
  if int(dataset.cardinality()) == tf.data.INFINITE_CARDINALITY:
    raise ValueError(
      "The tf.data.Dataset is infinite (repeat()?); its examples are kept in "
      "memory, so pass a finite dataset (e.g. dataset.take(n))"
    )
  flat = tf.nest.flatten(spec)
  if all(s.shape.rank and s.shape[0] is None for s in flat):
    dataset = dataset.unbatch()
  chunks = [
    tf.nest.map_structure(lambda t: t.numpy(), chunk)
    for chunk in dataset.take(max_examples + 1).batch(4096)
  ]
  count = sum(int(tf.nest.flatten(c)[0].shape[0]) for c in chunks)
  if count > max_examples:
    raise ValueError(
      f"The tf.data.Dataset holds more than max_examples={max_examples} "
      "examples; all of them are kept in memory as tensors. Pass a smaller "
      "dataset (dataset.take(n)) or raise max_examples"
    )
  if not chunks:
    raise ValueError("The tf.data.Dataset is empty")
  return tf.nest.map_structure(lambda *parts: np.concatenate(parts), *chunks)


def _seeded_config(config, seed, counter):
  """A copy of a layer config whose seedable Keras initializers get distinct fixed seeds."""
  if isinstance(config, dict):
    out = {k: _seeded_config(v, seed, counter) for k, v in config.items()}
    inner = out.get("config")
    if out.get("module") == "keras.initializers" and isinstance(inner, dict) and "seed" in inner:
      counter[0] += 1
      out["config"] = dict(inner, seed=int((seed * 7919 + counter[0]) % _MAX_SEED))
    return out
  if isinstance(config, list):
    return [_seeded_config(v, seed, counter) for v in config]
  return config


class KerasModelProblem(base.Problem):
  """A built keras.Model trained on (x, y) minibatches, as a pure function of its weights.

  Args:
    model: a built keras.Model (its variables exist: call it on data or model.build first).
    x: the inputs, a numpy array (or a nested structure of arrays, for multi-input models),
      or a finite tf.data.Dataset of (x, y) pairs (then y is None).
    y: the targets, a numpy array with the same first dimension as x.
    loss: a keras.losses.Loss instance, a loss name ("sparse_categorical_crossentropy"), a
      callable loss(y_true, y_pred), or None to use the compiled model's loss.
    minibatch_size: examples per step and instance (sampled with replacement).
    batch_size: independent instances stepped together (see the module docstring).
    init: "model", "reinitialize" or a callable (see the module docstring).
    training: the `training` flag passed to the model.
    max_examples: the most examples a tf.data.Dataset may hold.
    name: the problem's name in results.
  """

  name = "keras_model"

  def __init__(
    self,
    model: keras.Model,
    x: NestedArrays | tf.data.Dataset,
    y: base.ArrayLike | None = None,
    loss: LossLike | None = None,
    minibatch_size: int = 128,
    batch_size: int = 1,
    init: str | WeightsInit = "model",
    training: bool = True,
    max_examples: int = 1_000_000,
    name: str | None = None,
  ) -> None:
    if not isinstance(model, keras.Model):
      raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if not model.built or not model.trainable_variables:
      raise ValueError(
        f"Model {model.name!r} is not built or has no trainable weights: build "
        "it first (call it on a batch of data, or model.build(input_shape))"
      )
    trainable = list(model.trainable_variables)
    super().__init__(batch_size=batch_size, dtype=trainable[0].dtype)
    if name is not None:
      self.name = str(name)
    if int(minibatch_size) <= 0:
      raise ValueError(f"minibatch_size must be a positive integer, got {minibatch_size}")
    if not (init in INITS or callable(init)):
      raise ValueError(f"init must be one of {INITS} or a callable init(seed), got {init!r}")
    self.model = model
    self.minibatch_size = int(minibatch_size)
    self.training = bool(training)
    self.init = init

    self.names = [v.path for v in trainable]
    repeated = sorted({n for n in self.names if self.names.count(n) > 1})
    if repeated:
      raise ValueError(
        f"Trainable variables of {model.name!r} share the paths {repeated}; "
        "parameters are named by path, so give the layers distinct names"
      )
    self._shapes = {n: tuple(v.shape) for n, v in zip(self.names, trainable)}
    self._dtypes = {n: tf.as_dtype(v.dtype) for n, v in zip(self.names, trainable)}
    self._model_weights = {n: tf.convert_to_tensor(v.value) for n, v in zip(self.names, trainable)}

    # Non-trainable state: a snapshot, fixed for every step (see the module docstring).
    non_trainable = list(model.non_trainable_variables)
    self._non_trainable = [tf.convert_to_tensor(v.value) for v in non_trainable]
    self._seed_slots = [i for i, v in enumerate(non_trainable) if v.name == _SEED_STATE]

    self.loss_fn, self.loss_name = self._resolve_loss(loss, model)
    self.x, self.y = self._resolve_data(x, y, int(max_examples))
    self.num_examples = int(tf.nest.flatten(self.x)[0].shape[0])
    # Fail here, with a clear message, rather than inside a traced meta-training graph.
    try:
      self.instance_loss(
        self._model_weights, tf.nest.map_structure(lambda t: t[:2], self.x), self.y[:2]
      )
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as e:
      raise ValueError(
        f"Model {model.name!r} with loss {self.loss_name!r} fails on the first "
        f"examples of x and y: {e}"
      ) from e

  # --- construction helpers ------------------------------------------------------------------

  @staticmethod
  def _resolve_loss(loss, model):
    if loss is None:
      loss = getattr(model, "loss", None)
      if loss is None:
        raise ValueError(
          "Pass loss= (a keras loss, its name, or a callable): the model is not compiled with one"
        )
    if isinstance(loss, str):
      try:
        fn = keras.losses.get(loss)
      except ValueError as e:
        raise ValueError(f"Unknown loss {loss!r} ({e})") from e
      return fn, loss
    if isinstance(loss, keras.losses.Loss):
      return loss, loss.name
    if callable(loss):
      return loss, getattr(loss, "__name__", type(loss).__name__)
    raise ValueError(f"loss must be a keras loss, a loss name or a callable, got {loss!r}")

  def _resolve_data(self, x, y, max_examples):
    if isinstance(x, tf.data.Dataset):
      if y is not None:
        raise ValueError("With a tf.data.Dataset the targets come from the dataset; pass y=None")
      x, y = materialize_dataset(x, max_examples)
    if x is None or y is None:
      raise ValueError("Pass x and y arrays, or a tf.data.Dataset of (x, y) pairs as x")
    x = tf.nest.map_structure(tf.convert_to_tensor, x)
    y = tf.convert_to_tensor(y)
    sizes = {int(t.shape[0]) if t.shape.rank else None for t in tf.nest.flatten(x) + [y]}
    if len(sizes) != 1 or None in sizes:
      raise ValueError(
        "x and y must be arrays with the same number of examples (first "
        f"dimension); got x {[t.shape for t in tf.nest.flatten(x)]} and y "
        f"{y.shape}"
      )
    if sizes == {0}:
      raise ValueError("x and y are empty: a problem needs at least one example")
    return x, y

  # --- Problem protocol ----------------------------------------------------------------------

  def _instance_seed(self, seed, instance):
    return int((int(seed) * self.batch_size + instance) % _MAX_SEED)

  def _reinitialized_weights(self, seed):
    counter = [0]

    def clone_layer(layer):
      return layer.__class__.from_config(_seeded_config(layer.get_config(), seed, counter))

    try:
      clone = keras.models.clone_model(self.model, clone_function=clone_layer)
    except (ValueError, TypeError, NotImplementedError) as e:
      raise ValueError(
        f"init='reinitialize' clones the model with keras.models.clone_model, which failed "
        f"for {self.model.name!r} ({e}); pass init='model' or a callable "
        "init(seed) -> weights"
      ) from e
    if not clone.built or len(clone.trainable_variables) != len(self.names):
      clone(tf.nest.map_structure(lambda t: t[:1], self.x), training=False)
    values = [v.value for v in clone.trainable_variables]
    return self._check_weights(values, "the cloned model")

  def _check_weights(self, values, source):
    if isinstance(values, dict):
      missing = sorted(set(self.names) - set(values))
      extra = sorted(set(values) - set(self.names))
      if missing or extra:
        raise ValueError(
          f"Weights from {source} do not match the model's trainable variables: "
          f"missing {missing}, unexpected {extra}"
        )
      values = [values[n] for n in self.names]
    values = list(values)
    if len(values) != len(self.names):
      raise ValueError(
        f"{source} gave {len(values)} weights; the model has {len(self.names)} trainable variables"
      )
    out = {}
    for name, value in zip(self.names, values):
      value = tf.convert_to_tensor(value, self._dtypes[name])
      if tuple(value.shape) != self._shapes[name]:
        raise ValueError(
          f"Weight {name!r} from {source} has shape {tuple(value.shape)}, the "
          f"model's variable {self._shapes[name]}"
        )
      out[name] = value
    return out

  def init_params(self, seed: base.Seed) -> base.Params:
    if isinstance(self.init, str) and self.init == "model":
      instances = [self._model_weights] * self.batch_size
    else:
      instances = []
      for b in range(self.batch_size):
        instance_seed = self._instance_seed(seed, b)
        if callable(self.init):
          instances.append(self._check_weights(self.init(instance_seed), "init(seed)"))
        else:
          instances.append(self._reinitialized_weights(instance_seed))
    return {n: tf.stack([w[n] for w in instances]) for n in self.names}

  def sample_batches(self, seed: base.Seed, num_steps: int) -> dict[str, tf.Tensor]:
    batches = {
      "indices": base.minibatch_indices(
        seed, num_steps, self.batch_size, self.minibatch_size, self.num_examples
      )
    }
    if self._seed_slots:
      # Fresh seed-generator states per step and instance (dropout masks differ per step).
      states = tf.random.stateless_uniform(
        [num_steps + 1, self.batch_size, len(self._seed_slots), 2],
        base.stateless_seed(seed, 1001),
        maxval=_MAX_SEED,
        dtype=tf.int32,
      )
      batches["seed_states"] = states
    return batches

  def instance_loss(
    self,
    weights: Mapping[str, tf.Tensor],
    x: NestedArrays,
    y: tf.Tensor,
    seed_states: tf.Tensor | None = None,
  ) -> tf.Tensor:
    """The loss of one instance: weights {name: tensor without the batch axis}."""
    non_trainable = list(self._non_trainable)
    for k, slot in enumerate(self._seed_slots):
      if seed_states is not None:
        non_trainable[slot] = tf.cast(seed_states[k], non_trainable[slot].dtype)
    outputs, _, model_losses = self.model.stateless_call(
      [weights[n] for n in self.names], non_trainable, x, training=self.training, return_losses=True
    )
    value = tf.convert_to_tensor(self.loss_fn(y, outputs))
    if value.shape.rank:  # a per-example loss function: average over the minibatch
      value = tf.reduce_mean(value)
    if model_losses:
      value = value + tf.add_n([tf.cast(loss, value.dtype) for loss in model_losses])
    return value

  # Plain Python over static structure: nothing for autograph to convert (saves tracing time).
  @tf.autograph.experimental.do_not_convert
  def loss(self, params: base.Params, batch: Mapping[str, tf.Tensor]) -> tf.Tensor:
    losses = []
    for b in range(self.batch_size):
      indices = batch["indices"][b]
      x = tf.nest.map_structure(lambda t, i=indices: tf.gather(t, i), self.x)
      y = tf.gather(self.y, indices)
      seeds = batch["seed_states"][b] if "seed_states" in batch else None
      losses.append(self.instance_loss({n: params[n][b] for n in self.names}, x, y, seeds))
    return tf.cast(tf.stack(losses), self.dtype)

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update(
      model=self.model.name,
      loss=self.loss_name,
      minibatch_size=self.minibatch_size,
      init=self.init if isinstance(self.init, str) else "callable",
      training=self.training,
      num_examples=self.num_examples,
      parameters={n: list(s) for n, s in self._shapes.items()},
    )
    return config
