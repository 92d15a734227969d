"""Convolutional classifiers as optimizees: the paper's CIFAR-10 / CIFAR-5 / CIFAR-2 experiment.

mnist_convnet is the same network on MNIST digits ([28, 28, 1], flattened 4 * 4 * 16 too):
the real-image substitute for the CIFAR panel where CIFAR-10 cannot be downloaded.

The network (defaults follow the paper and the authors' released code where they agree):

    image [32, 32, 3]
    -> 3 x { conv 3x3 "SAME", 16 channels -> batch norm -> ReLU -> 2x2 max pool, stride 2 }
    -> flatten (4 * 4 * 16 = 256)
    -> fully connected 32 units -> batch norm -> ReLU
    -> linear classifier (num_classes) -> softmax cross-entropy, minibatches of 128.

Choices, and why:
  * 16 channels per conv layer, as in the authors' code (conv_channels=(16, 16, 16)); the
    paper gives no widths. 3x3 kernels (the authors' code used 5x5; the paper does not say):
    `kernel_size` is configurable.
  * The conv layers and the 32-unit layer carry no bias: batch norm subtracts the minibatch
    mean right after them, so a bias there would have an exactly zero gradient. Batch norm's
    learnable offset `beta` (and scale `gamma`) play that role.
  * Weights are drawn from a Gaussian scaled by fan-in (init_stddev=None, the default):
    N(0, 2 / fan_in) for the layers followed by batch norm and ReLU, N(0, 1 / fan_in) for the
    classifier, whose bias starts at 0; gamma starts at 1 and beta at 0. Not the authors' IID
    N(0, 0.01^2) (init_stddev=0.01 reproduces it): with it the first conv layer's outputs
    have a variance of about 27 * 1e-4 * 0.06 = 1.6e-4 on CIFAR pixels, several times below
    batch norm's epsilon (1e-3), so that batch norm would mostly scale by 1/sqrt(epsilon)
    instead of normalising.

Batch norm inside a functional optimizee. The loss the optimizer minimises is the training
loss, so batch norm runs in training mode: every batch-norm layer normalises with the mean
and variance of the current minibatch (per channel over minibatch x height x width for conv
layers, per unit over the minibatch for the fully connected one), and only gamma and beta
are parameters. Running averages are not needed for that loss: they never enter it, and
each step's statistics are a function of (parameters, minibatch) alone, so the optimizee
stays a pure function of its parameters. For evaluation with fixed statistics (inference
mode) use `batch_norm_statistics(params, x)`, which computes each layer's population mean
and variance over a whole set of examples x (what running averages estimate once training
has converged), and pass them to `logits(params, x, statistics)` / `evaluate(...)`.

`batch_size` independent networks (each with its own minibatches) step together. The
instance axis is folded into the channel axis, [B, M, H, W, C] -> [M, H, W, B*C], and each
conv layer is one grouped convolution with B groups (tf.nn.conv2d infers the groups from
the kernel's input depth), so instance b only ever sees its own channels; batch norm and
max pooling act per channel and need nothing special. With batch_size=1 (the main case)
this is a plain convolution.

Parameter names: conv_{i}/w [kh, kw, c_in, c_out], conv_{i}/gamma, conv_{i}/beta [c_out];
fc_0/w [256, 32], fc_0/gamma, fc_0/beta [32]; fc_1/w [32, classes], fc_1/b [classes] (the
classifier) -- each with a leading batch_size axis. CONVNET_PARAMETER_GROUPS splits them
between the paper's two optimizer networks.
"""

import functools
import math

import numpy as np
import tensorflow as tf

from l2l_tf import data
from l2l_tf import registry
from l2l_tf.data import cifar
from l2l_tf.data import mnist
from l2l_tf.problems import base
from l2l_tf.problems import mlp

# The paper's two optimizer networks: one for the conv layers, one for the fully connected.
CONVNET_PARAMETER_GROUPS = {"conv": r"^conv_", "fc": r"^fc_"}
# The named CIFAR problems, from tfds or CIFAR-10's binary files. CIFAR-5 and CIFAR-2 are label
# subsets, renumbered 0..k-1: CIFAR-5 = classes 0-4 (airplane, automobile, bird, cat, deer),
# CIFAR-2 = classes 0-1 (airplane, automobile).
CIFAR_LABELS = {"cifar10": tuple(range(10)), "cifar5": (0, 1, 2, 3, 4), "cifar2": (0, 1)}
# The paper's "LSTM-sub": meta-train on the labels the test subset does not use, e.g.
# make_problem("cifar5", "train", labels=CIFAR_HELD_OUT_LABELS["cifar5"]) for meta-training
# and make_problem("cifar5", "test") (classes 0-4) for testing.
CIFAR_HELD_OUT_LABELS = {"cifar5": (5, 6, 7, 8, 9), "cifar2": (2, 3, 4, 5, 6, 7, 8, 9)}
BATCH_NORM_EPSILON = 1e-3


def batch_norm(x, gamma, beta, axes, statistics=None, epsilon=BATCH_NORM_EPSILON):
  """Training-mode batch norm: (x - mean) / sqrt(var + eps) * gamma + beta.

  mean and var are taken over `axes` of x (the minibatch statistics) unless `statistics`
  = (mean, var) is given (inference with fixed statistics). Returns (output, (mean, var)).
  """
  if statistics is None:
    mean, variance = tf.nn.moments(x, axes=axes, keepdims=True)
  else:
    mean, variance = statistics
  inv = tf.math.rsqrt(variance + epsilon) * gamma
  return (x - mean) * inv + beta, (mean, variance)


class ConvNetClassificationProblem(base.DatasetClassificationProblem):
  """Softmax cross-entropy of a small batch-normalised convnet on minibatches of images.

  Args:
    images: float [N, height, width, channels] (CIFAR: [N, 32, 32, 3] in [0, 1]).
    labels: int [N] in [0, num_classes).
    num_classes: outputs of the classifier (10 for CIFAR-10, 5 / 2 for the label subsets).
    conv_channels: output channels of each conv layer (each followed by BN, ReLU, 2x2 pool).
    kernel_size: conv kernels are kernel_size x kernel_size.
    hidden_sizes: widths of the fully connected layers before the classifier (BN + ReLU).
    minibatch_size: examples per step and instance (paper: 128).
    batch_size: independent networks stepped together.
    init_stddev: None: fan-in scaled Gaussian weights (see above); a float: every weight
      and the classifier's bias IID N(0, init_stddev^2).
    batch_norm_epsilon: added to the variance in batch norm.
    name: the problem's name in results ("cifar10", "cifar5", "cifar2", ...).
    class_ids: optional, the dataset's original class ids of labels 0..num_classes-1 (a
      label subset); recorded in get_config only.
  """

  name = "cifar10"

  def __init__(
    self,
    images,
    labels,
    num_classes=10,
    conv_channels=(16, 16, 16),
    kernel_size=3,
    hidden_sizes=(32,),
    minibatch_size=128,
    batch_size=1,
    init_stddev=None,
    batch_norm_epsilon=BATCH_NORM_EPSILON,
    name=None,
    class_ids=None,
    dtype="float32",
  ):
    super().__init__(batch_size=batch_size, dtype=dtype)
    if name is not None:
      self.name = str(name)
    self.set_dataset(images, labels)
    if (
      self.images.shape.rank != 4
      or self.labels.shape.rank != 1
      or (self.images.shape[0] != self.labels.shape[0])
    ):
      raise ValueError(
        f"images must be [N, height, width, channels] and labels [N]; got "
        f"{self.images.shape} and {self.labels.shape}"
      )
    if self.images.shape[0] == 0:
      raise ValueError("images is empty: a problem needs at least one example")
    if not conv_channels or min(conv_channels) <= 0:
      raise ValueError(f"conv_channels must be positive integers, got {conv_channels}")
    if hidden_sizes is None or (hidden_sizes and min(hidden_sizes) <= 0):
      raise ValueError(f"hidden_sizes must be positive integers, got {hidden_sizes}")
    for arg, value in (
      ("num_classes", num_classes),
      ("kernel_size", kernel_size),
      ("minibatch_size", minibatch_size),
    ):
      if int(value) <= 0:
        raise ValueError(f"{arg} must be a positive integer, got {value}")
    if int(minibatch_size) < 2:
      raise ValueError("minibatch_size must be at least 2: batch norm needs minibatch statistics")
    self.num_classes = int(num_classes)
    low, high = int(tf.reduce_min(self.labels)), int(tf.reduce_max(self.labels))
    if low < 0 or high >= self.num_classes:
      raise ValueError(
        f"labels must lie in 0..{self.num_classes - 1} (num_classes="
        f"{self.num_classes}); got values {low}..{high}"
      )
    self.conv_channels = tuple(int(c) for c in conv_channels)
    self.kernel_size = int(kernel_size)
    self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
    self.minibatch_size = int(minibatch_size)
    self.init_stddev = None if init_stddev is None else float(init_stddev)
    self.batch_norm_epsilon = float(batch_norm_epsilon)
    if self.batch_norm_epsilon < 0:
      raise ValueError(f"batch_norm_epsilon must be >= 0, got {batch_norm_epsilon}")
    self.class_ids = None if class_ids is None else [int(c) for c in class_ids]
    if self.class_ids is not None and len(self.class_ids) != self.num_classes:
      raise ValueError(
        f"class_ids {self.class_ids} must name num_classes={self.num_classes} classes"
      )
    height, width, depth = (int(d) for d in self.images.shape[1:])
    for _ in self.conv_channels:  # 2x2 max pooling, stride 2, "SAME": ceil(size / 2)
      height, width = -(-height // 2), -(-width // 2)
    self.input_depth = depth
    self.flat_size = height * width * self.conv_channels[-1]

  # --- parameters -----------------------------------------------------------------------------

  def parameter_shapes(self):
    """{name: shape of one instance}, in the order the network uses them."""
    shapes = {}
    c_in, k = self.input_depth, self.kernel_size
    for i, c_out in enumerate(self.conv_channels):
      shapes[f"conv_{i}/w"] = [k, k, c_in, c_out]
      shapes[f"conv_{i}/gamma"] = [c_out]
      shapes[f"conv_{i}/beta"] = [c_out]
      c_in = c_out
    fan_in = self.flat_size
    for i, units in enumerate(self.hidden_sizes):
      shapes[f"fc_{i}/w"] = [fan_in, units]
      shapes[f"fc_{i}/gamma"] = [units]
      shapes[f"fc_{i}/beta"] = [units]
      fan_in = units
    out = len(self.hidden_sizes)
    shapes[f"fc_{out}/w"] = [fan_in, self.num_classes]
    shapes[f"fc_{out}/b"] = [self.num_classes]
    return shapes

  def init_params(self, seed):
    params = {}
    for stream, (name, shape) in enumerate(self.parameter_shapes().items()):
      full = [self.batch_size] + shape
      if name.endswith("/gamma"):
        params[name] = tf.ones(full, self.dtype)
      elif name.endswith("/beta") or (name.endswith("/b") and self.init_stddev is None):
        params[name] = tf.zeros(full, self.dtype)
      else:
        stddev = self.init_stddev
        if stddev is None:  # fan-in scaling: 2 / fan_in before BN + ReLU, 1 / fan_in at the end
          fan_in = int(np.prod(shape[:-1]))
          classifier = name.startswith(f"fc_{len(self.hidden_sizes)}/")
          stddev = math.sqrt((1.0 if classifier else 2.0) / fan_in)
        params[name] = tf.random.stateless_normal(
          full, base.stateless_seed(seed, stream), stddev=stddev, dtype=self.dtype
        )
    return params

  # --- the network ----------------------------------------------------------------------------

  # Plain Python over static structure: nothing for autograph to convert (saves tracing time).
  @tf.autograph.experimental.do_not_convert
  def _forward(self, params, x, statistics=None):
    """Logits [B, M, classes] and the statistics each batch-norm layer used."""
    b = self.batch_size
    used = {}
    x = tf.convert_to_tensor(x, self.dtype)
    m = tf.shape(x)[1]
    # [B, M, H, W, C] -> [M, H, W, B*C]: channel b*C + c is channel c of instance b.
    h = tf.transpose(x, [1, 2, 3, 0, 4])
    h = tf.reshape(h, tf.concat([tf.shape(h)[:3], [b * self.input_depth]], 0))
    for i, c_out in enumerate(self.conv_channels):
      name = f"conv_{i}"
      w = params[f"{name}/w"]  # [B, k, k, c_in, c_out] -> [k, k, c_in, B*c_out], B groups
      kernel = tf.reshape(
        tf.transpose(w, [1, 2, 3, 0, 4]), tf.concat([tf.shape(w)[1:4], [b * c_out]], 0)
      )
      h = tf.nn.conv2d(h, kernel, strides=1, padding="SAME")
      h, used[name] = batch_norm(
        h,
        tf.reshape(params[f"{name}/gamma"], [b * c_out]),
        tf.reshape(params[f"{name}/beta"], [b * c_out]),
        axes=[0, 1, 2],
        statistics=None if statistics is None else statistics[name],
        epsilon=self.batch_norm_epsilon,
      )
      h = tf.nn.max_pool2d(tf.nn.relu(h), ksize=2, strides=2, padding="SAME")
    # [M, h, w, B*C] -> [B, M, h*w*C], flattened in (row, column, channel) order per instance.
    c_last = self.conv_channels[-1]
    spatial = tf.shape(h)[1:3]
    h = tf.reshape(h, tf.concat([[m], spatial, [b, c_last]], 0))
    h = tf.reshape(tf.transpose(h, [3, 0, 1, 2, 4]), [b, m, self.flat_size])
    for i in range(len(self.hidden_sizes)):
      name = f"fc_{i}"
      h = tf.matmul(h, params[f"{name}/w"])
      h, used[name] = batch_norm(
        h,
        params[f"{name}/gamma"][:, None, :],
        params[f"{name}/beta"][:, None, :],
        axes=[1],
        statistics=None if statistics is None else statistics[name],
        epsilon=self.batch_norm_epsilon,
      )
      h = tf.nn.relu(h)
    out = f"fc_{len(self.hidden_sizes)}"
    logits = tf.matmul(h, params[f"{out}/w"]) + params[f"{out}/b"][:, None, :]
    return logits, used

  def logits(self, params, x, statistics=None):
    """x: [batch_size, M, H, W, C] -> logits [batch_size, M, classes].

    statistics None: training-mode batch norm (each instance's own minibatch statistics).
    Otherwise {layer: (mean, var)} from batch_norm_statistics: inference mode.
    """
    return self._forward(params, x, statistics)[0]

  def batch_norm_statistics(self, params, x):
    """{layer: (mean, var)} of every batch-norm layer over all of x ([batch_size, N, ...]).

    These are the population statistics of the set x (layer l's are computed on inputs that
    earlier layers normalised with their own statistics over the same x): pass a large
    sample of training images to evaluate held-out data in inference mode.
    """
    return self._forward(params, x)[1]

  def evaluate(self, params, images, labels, statistics=None):
    """(mean cross-entropy [batch_size], accuracy [batch_size]) of every instance on the
    same examples images [N, H, W, C] / labels [N].

    statistics None uses the statistics of `images` itself (full-batch training mode); pass
    batch_norm_statistics(params, training_images) for inference-mode evaluation. All
    examples go through in one pass (about 0.3 MB of activations per CIFAR image and
    instance): use a few thousand, not the whole dataset.
    """
    x = tf.convert_to_tensor(images, self.dtype)
    x = tf.broadcast_to(x[None], tf.concat([[self.batch_size], tf.shape(x)], 0))
    y = tf.convert_to_tensor(labels, tf.int32)
    logits = self.logits(params, x, statistics)
    y = tf.broadcast_to(y[None], tf.shape(logits)[:2])
    xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), self.dtype)
    return tf.reduce_mean(xent, axis=-1), tf.reduce_mean(correct, axis=-1)

  def get_config(self):
    config = super().get_config()
    config.update(
      num_classes=self.num_classes,
      conv_channels=list(self.conv_channels),
      kernel_size=self.kernel_size,
      hidden_sizes=list(self.hidden_sizes),
      minibatch_size=self.minibatch_size,
      init_stddev=self.init_stddev,
      batch_norm_epsilon=self.batch_norm_epsilon,
    )
    if self.class_ids is not None:
      config["class_ids"] = list(self.class_ids)
    return config


def make_cifar_problem(name, split, batch_size, options):
  """CIFAR-10 / -5 / -2 convnet problems; options.labels overrides the class subset (LSTM-sub).

  train and validation split CIFAR-10's training set 90% / 10% (by options.seed); test is its
  test set. Data comes from options.dataset_source "tfds" or "binary" (options.data_dir).
  """
  if options.dataset_source not in cifar.SOURCES:
    raise ValueError(
      f"{name} reads CIFAR-10 from dataset_source 'tfds' (downloads) or 'binary' "
      f"(a directory of the official .bin files, data_dir); got "
      f"{options.dataset_source!r} (there is no embedded CIFAR sample)"
    )
  labels = CIFAR_LABELS[name] if options.labels is None else tuple(options.labels)
  load = lambda data_split: data.load_cifar10(
    options.dataset_source, data_split, options.data_dir, labels=labels
  )
  images, targets = data.load_problem_split(load, split, options.seed)
  return ConvNetClassificationProblem(
    images,
    targets,
    num_classes=len(labels),
    batch_size=batch_size or 1,
    name=name,
    class_ids=labels,
  )


for _name in CIFAR_LABELS:
  registry.PROBLEMS.register(_name, family="cifar", parameter_groups=CONVNET_PARAMETER_GROUPS)(
    functools.partial(make_cifar_problem, _name)
  )


@registry.PROBLEMS.register("mnist_convnet", parameter_groups=CONVNET_PARAMETER_GROUPS)
def make_mnist_convnet_problem(split, batch_size, options):
  """The CIFAR convnet and its two optimizer networks on MNIST digits [28, 28, 1], 10 classes.

  Data as the MNIST MLP's (mlp.load_mnist_split: options.dataset_source embedded, idx or
  tfds; train and validation split the training set 90% / 10% by options.seed; test is
  t10k).
  """
  images, labels = mlp.load_mnist_split(split, options)
  return ConvNetClassificationProblem(
    images.reshape((-1,) + mnist.MNIST_IMAGE_SHAPE + (1,)),
    labels,
    batch_size=batch_size or 1,
    name="mnist_convnet",
  )
