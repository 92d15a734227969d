"""Neural Art as an optimizee: Gatys et al. style transfer, the parameters being an image's pixels.

The paper's fourth experiment (Andrychowicz et al. 2016, Figure 8). An instance is one content
crop; its loss at an image x (pixels in [0, 1], shape [size, size, 3]) is

  f(x) = a * content(x) + b * style(x) + c * tv(x)

  content(x) = mean over content layers of  mean((F(x) - F(content))^2) / mean(F(content)^2)
  style(x)   = mean over style layers of    mean((G(x) - G(style))^2) / mean(G(style)^2)
  tv(x)      = mean squared difference of vertically and of horizontally adjacent pixels

where F are feature maps of a fixed convnet and G(F) = F^T F / positions their Gram matrices.
Each layer's term is relative to its target's size, so the same weights a, b, c suit either
feature network:

  * "vgg19": keras.applications.VGG19 with ImageNet weights, used only when the weights file is
    already in Keras's cache (it is never downloaded);
  * "random": a fixed, seeded convnet of random filters at three scales, which is known to
    synthesise textures (Ustyuzhaninov et al., ICLR 2017).

Content photos come in train / validation / test directories (split by photo, so test crops
come from photos never seen in meta-training); the package ships a few CC0 / public-domain
ones (data/images, see its README), and a user's directory of the same layout can replace them.
"""

import copy
import os

import keras
import numpy as np
import tensorflow as tf

from l2l_tf import registry
from l2l_tf.data.errors import DataError
from l2l_tf.problems import base

IMAGES_DIR = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "images"
)
STYLES = ("brick", "grass", "gravel")  # shipped in IMAGES_DIR/style/<name>.jpg
DEFAULT_STYLE = "gravel"
SPLITS = ("train", "validation", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
FEATURE_NETWORKS = ("auto", "vgg19", "random")
VGG19_WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"


# --- images -----------------------------------------------------------------------------------


def load_image(path):
  """An image file as float32 [height, width, 3] in [0, 1]; DataError naming the file if bad."""
  if not os.path.isfile(path):
    raise DataError(f"{path}: no such image file")
  try:
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
  except tf.errors.OpError as e:  # undecodable or unreadable; its first line says which
    reason = (str(e.message).strip().splitlines() or ["cannot decode"])[0]
    raise DataError(f"{path}: not an image (PNG, JPEG, GIF or BMP expected; {reason})") from None
  return tf.image.convert_image_dtype(image, tf.float32).numpy()


def list_images(directory):
  """The image files of a directory, sorted by name; DataError if there are none."""
  if not os.path.isdir(directory):
    raise DataError(f"{directory}: no such image directory")
  paths = sorted(
    os.path.join(directory, name)
    for name in os.listdir(directory)
    if name.lower().endswith(IMAGE_EXTENSIONS)
  )
  if not paths:
    raise DataError(f"{directory}: holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
  return paths


def content_photo_paths(split, data_dir=None):
  """The content photos of a split: data_dir/<split>/*, or the package's when data_dir is None."""
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; choose one of {list(SPLITS)}")
  return list_images(os.path.join(data_dir or os.path.join(IMAGES_DIR, "content"), split))


def style_path(style):
  """A shipped style's file (style in STYLES), or `style` itself taken as an image path."""
  if style in STYLES:
    return os.path.join(IMAGES_DIR, "style", f"{style}.jpg")
  if not os.path.isfile(style):
    raise DataError(f"{style}: no such style image (give a file, or one of {', '.join(STYLES)})")
  return style


def load_sized_image(path, min_size):
  """load_image, refusing images with a side shorter than min_size (the crop)."""
  image = load_image(path)
  if min(image.shape[:2]) < min_size:
    raise DataError(
      f"{path}: {image.shape[1]}x{image.shape[0]} pixels is smaller than the "
      f"{min_size}x{min_size} crop"
    )
  return image


# --- feature networks ---------------------------------------------------------------------------


class RandomFilterFeatures:
  """A fixed convnet of seeded random filters (Ustyuzhaninov et al., ICLR 2017).

  Three 3x3 conv + ReLU layers, each after a 2x average pooling but the first, so the style
  statistics see three scales; filters are He-scaled Gaussian, drawn once from `seed`.
  Content is matched at the second layer, style at all three.
  """

  name = "random"

  def __init__(self, seed=0, channels=(64, 64, 128), kernel_size=3, dtype="float32"):
    rng = np.random.default_rng(seed)
    self.seed = int(seed)
    self.channels = tuple(int(c) for c in channels)
    self.filters = []
    fan_in_channels = 3
    for width in self.channels:
      shape = (kernel_size, kernel_size, fan_in_channels, width)
      scale = np.sqrt(2.0 / (kernel_size * kernel_size * fan_in_channels))
      self.filters.append(tf.constant(rng.standard_normal(shape) * scale, dtype))
      fan_in_channels = width
    self.content_layers = (1,)
    self.style_layers = tuple(range(len(self.channels)))

  def __call__(self, images, num_layers=None):
    """images [N, H, W, 3] in [0, 1] -> feature maps [N, h, w, C] of the first num_layers."""
    x = images - 0.5  # centred, so the ReLUs of random filters are active about half the time
    maps = []
    for layer, kernel in enumerate(self.filters[:num_layers]):
      if layer:
        x = tf.nn.avg_pool2d(x, 2, 2, "VALID")
      x = tf.nn.relu(tf.nn.conv2d(x, tf.cast(kernel, x.dtype), 1, "SAME"))
      maps.append(x)
    return maps

  def describe(self):
    return (
      f"random (seeded random-filter convnet, seed {self.seed}, 3x3 filters, channels "
      f"{'-'.join(map(str, self.channels))}; no VGG19 weights used)"
    )


class VGG19Features:
  """keras.applications.VGG19 features at Gatys et al.'s layers.

  Style at block1..5_conv1, content at block4_conv2. `weights` is the path of the ImageNet
  weights file (notop), or None for the architecture with random initial weights.
  """

  name = "vgg19"
  STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
  CONTENT_LAYERS = ("block4_conv2",)
  # ImageNet channel means of the Caffe preprocessing the weights were trained with (BGR).
  BGR_MEANS = (103.939, 116.779, 123.68)

  def __init__(self, weights=None):
    vgg = keras.applications.VGG19(include_top=False, weights=weights, input_shape=(None, None, 3))
    vgg.trainable = False
    names = self.STYLE_LAYERS + self.CONTENT_LAYERS
    self.model = keras.Model(vgg.input, [vgg.get_layer(n).output for n in names])
    self.weights = weights
    self.style_layers = tuple(range(len(self.STYLE_LAYERS)))
    self.content_layers = (len(self.STYLE_LAYERS),)

  def __call__(self, images, num_layers=None):
    """images [N, H, W, 3] in [0, 1] -> feature maps, style layers then the content layer.

    num_layers is accepted for the common interface; all maps are computed in one pass.
    """
    del num_layers
    bgr = images[..., ::-1] * 255.0 - tf.constant(self.BGR_MEANS, images.dtype)
    return [tf.cast(m, images.dtype) for m in self.model(bgr)]

  def describe(self):
    source = f"ImageNet weights from {self.weights}" if self.weights else "untrained weights"
    return f"vgg19 (keras.applications.VGG19, {source})"


def vgg19_weights_path():
  """Where Keras caches VGG19's notop weights ($KERAS_HOME or ~/.keras, then models/)."""
  keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
  return os.path.join(keras_home, "models", VGG19_WEIGHTS_FILE)


_feature_networks = {}


def make_feature_network(kind="auto"):
  """The feature network `kind` (FEATURE_NETWORKS); one instance per kind per process.

  "auto" is VGG19 when its ImageNet weights are in Keras's cache, else the random-filter net.
  "vgg19" without the cached weights is an error: they are never downloaded.
  """
  if kind not in FEATURE_NETWORKS:
    raise ValueError(f"Unknown feature network {kind!r}; choose one of {list(FEATURE_NETWORKS)}")
  weights = vgg19_weights_path()
  if kind == "auto":
    kind = "vgg19" if os.path.isfile(weights) else "random"
  if kind == "vgg19" and not os.path.isfile(weights):
    raise DataError(
      f"{weights}: VGG19 ImageNet weights not in Keras's cache (they are never "
      "downloaded here); use the random-filter feature network"
    )
  if kind not in _feature_networks:
    _feature_networks[kind] = VGG19Features(weights) if kind == "vgg19" else RandomFilterFeatures()
  return _feature_networks[kind]


# --- loss terms ---------------------------------------------------------------------------------


def gram_matrix(features):
  """[N, H, W, C] -> [N, C, C]: feature correlations averaged over positions."""
  positions = tf.cast(tf.shape(features)[1] * tf.shape(features)[2], features.dtype)
  return tf.einsum("nhwc,nhwd->ncd", features, features) / positions


def total_variation(images):
  """[N, H, W, C] -> [N]: mean squared difference of vertical plus of horizontal neighbours."""
  vertical = tf.reduce_mean(tf.square(images[:, 1:] - images[:, :-1]), axis=[1, 2, 3])
  horizontal = tf.reduce_mean(tf.square(images[:, :, 1:] - images[:, :, :-1]), axis=[1, 2, 3])
  return vertical + horizontal


def _relative_squared_error(values, targets):
  """[N, ...] x [N or 1, ...] -> [N]: mean squared error over the mean square of the target."""
  axes = list(range(1, values.shape.rank))
  error = tf.reduce_mean(tf.square(values - targets), axis=axes)
  return error / (tf.reduce_mean(tf.square(targets), axis=axes) + 1e-12)


def content_loss(features, content_features, layers):
  """[N]: relative feature error at the content layers, averaged over them."""
  return tf.add_n(
    [_relative_squared_error(features[i], tf.stop_gradient(content_features[i])) for i in layers]
  ) / len(layers)


def style_loss(features, style_grams, layers):
  """[N]: relative Gram-matrix error at the style layers (targets [1, C, C]), averaged."""
  return tf.add_n(
    [
      _relative_squared_error(gram_matrix(features[i]), style_grams[k])
      for k, i in enumerate(layers)
    ]
  ) / len(layers)


# --- the problem --------------------------------------------------------------------------------


class NeuralArtProblem(base.Problem):
  """Style transfer from white noise on random square crops of content photos.

  Instance b of seed s stylises crop b (a photo and a position drawn from s) starting from
  uniform noise; its parameters are the pixels {"image": [batch_size, size, size, 3]}.

  Args:
    photos: list of float [H, W, 3] content photos in [0, 1], each at least size x size.
    style_image: float [H, W, 3] in [0, 1]; its Gram matrices, computed once, are the target.
    image_size: side of the square crops (and of the optimised image).
    feature_network: a name in FEATURE_NETWORKS or a feature network object.
    content_weight, style_weight, tv_weight: a, b, c above.
    photo_names, style_name: what get_config reports.
  """

  name = "neural_art"

  def __init__(
    self,
    photos,
    style_image,
    image_size=64,
    batch_size=1,
    feature_network="auto",
    content_weight=1.0,
    style_weight=5.0,
    tv_weight=2.0,
    photo_names=None,
    style_name=None,
    dtype="float32",
  ):
    super().__init__(batch_size=batch_size, dtype=dtype)
    self.image_size = int(image_size)
    if self.image_size < 8:
      raise ValueError(f"image_size must be at least 8, got {image_size}")
    if not photos:
      raise ValueError("NeuralArtProblem needs at least one content photo")
    names = list(photo_names or [f"photo {i}" for i in range(len(photos))])
    for name, photo in zip(names, photos):
      if min(photo.shape[:2]) < self.image_size:
        raise DataError(
          f"{name}: {photo.shape[1]}x{photo.shape[0]} pixels is smaller than the "
          f"{self.image_size}x{self.image_size} crop"
        )
    self.features = (
      make_feature_network(feature_network) if isinstance(feature_network, str) else feature_network
    )
    self.content_weight = float(content_weight)
    self.style_weight = float(style_weight)
    self.tv_weight = float(tv_weight)
    self.photo_names = names
    self.style_name = style_name
    # Photos padded to one tensor; crops stay inside each photo's own height and width.
    heights = [p.shape[0] for p in photos]
    widths = [p.shape[1] for p in photos]
    padded = np.zeros([len(photos), max(heights), max(widths), 3], np.float32)
    for i, photo in enumerate(photos):
      padded[i, : heights[i], : widths[i]] = photo
    self.photos = tf.constant(padded, self.dtype)
    self.photo_heights = tf.constant(heights, tf.int32)
    self.photo_widths = tf.constant(widths, tf.int32)
    style_features = self.features(tf.constant(style_image[None], self.dtype))
    self.style_grams = [gram_matrix(style_features[i]) for i in self.features.style_layers]

  def crop_positions(self, seed):
    """(photo, top, left), each int32 [batch_size]: the content crops of seed's instances."""
    # Instance-major draws: instance b's crop does not depend on batch_size (the stateless
    # generator's output for a smaller shape is a prefix of that for a larger one).
    draws = tf.transpose(
      tf.random.stateless_uniform(
        [self.batch_size, 3], base.stateless_seed(seed, 2000), dtype=tf.float64
      )
    )
    num_photos = self.photos.shape[0]
    photo = tf.minimum(tf.cast(draws[0] * num_photos, tf.int32), num_photos - 1)

    def offset(draw, extents):
      room = tf.gather(extents, photo) - self.image_size + 1
      return tf.minimum(tf.cast(draw * tf.cast(room, tf.float64), tf.int32), room - 1)

    return photo, offset(draws[1], self.photo_heights), offset(draws[2], self.photo_widths)

  def crops(self, photo, top, left):
    """The content crops [batch_size, size, size, 3] at the given positions."""
    size, batch = self.image_size, tf.shape(photo)[0]
    steps = tf.range(size)
    rows = tf.broadcast_to((top[:, None] + steps)[:, :, None], [batch, size, size])
    cols = tf.broadcast_to((left[:, None] + steps)[:, None, :], [batch, size, size])
    photos = tf.broadcast_to(photo[:, None, None], [batch, size, size])
    return tf.gather_nd(self.photos, tf.stack([photos, rows, cols], axis=-1))

  def content_images(self, seed):
    """The content crops of seed's instances (what the stylised images are compared with)."""
    return self.crops(*self.crop_positions(seed))

  def first_instances(self, count):
    """This family with batch_size `count`: its instances are the first `count` of this one's."""
    if not 0 < count <= self.batch_size:
      raise ValueError(f"count must be in [1, {self.batch_size}], got {count}")
    subset = copy.copy(self)  # shares the photos, the feature network and the style targets
    subset.batch_size = int(count)
    return subset

  def init_params(self, seed):
    shape = [self.batch_size, self.image_size, self.image_size, 3]
    return {
      "image": tf.random.stateless_uniform(shape, base.stateless_seed(seed, 0), dtype=self.dtype)
    }

  def sample_batches(self, seed, num_steps):
    # Every step of an instance sees the same content crop: only its position is carried.
    photo, top, left = self.crop_positions(seed)
    return {
      name: tf.tile(value[None], [num_steps + 1, 1])
      for name, value in (("photo", photo), ("top", top), ("left", left))
    }

  def loss_terms(self, images, content):
    """{"content", "style", "tv"}: each [N], for images and content crops [N, size, size, 3]."""
    features = self.features(images)
    # The content crop only needs the maps up to the deepest content layer.
    content_features = self.features(content, max(self.features.content_layers) + 1)
    return {
      "content": content_loss(features, content_features, self.features.content_layers),
      "style": style_loss(features, self.style_grams, self.features.style_layers),
      "tv": total_variation(images),
    }

  def total(self, terms):
    """a * content + b * style + c * tv of loss_terms' output."""
    return (
      self.content_weight * terms["content"]
      + self.style_weight * terms["style"]
      + self.tv_weight * terms["tv"]
    )

  def loss(self, params, batch):
    content = tf.stop_gradient(self.crops(batch["photo"], batch["top"], batch["left"]))
    return self.total(self.loss_terms(params["image"], content))

  def describe(self):
    """One line saying what runs, the feature network first."""
    return (
      f"neural_art: features {self.features.describe()}; style {self.style_name}; "
      f"{self.image_size}x{self.image_size} crops of {', '.join(self.photo_names)}; "
      f"f = {self.content_weight:g}*content + {self.style_weight:g}*style + "
      f"{self.tv_weight:g}*tv"
    )

  def get_config(self):
    config = super().get_config()
    config.update(
      image_size=self.image_size,
      feature_network=self.features.name,
      feature_network_description=self.features.describe(),
      style=self.style_name,
      photos=list(self.photo_names),
      content_weight=self.content_weight,
      style_weight=self.style_weight,
      tv_weight=self.tv_weight,
    )
    return config


def make_problem(
  split, batch_size=1, data_dir=None, style=DEFAULT_STYLE, image_size=64, feature_network="auto"
):
  """NeuralArtProblem on a split's content photos (the package's, or data_dir/<split>/)."""
  paths = content_photo_paths(split, data_dir)
  photos = [load_sized_image(p, image_size) for p in paths]
  style_file = style_path(style)
  return NeuralArtProblem(
    photos,
    load_sized_image(style_file, image_size),
    image_size=image_size,
    batch_size=batch_size,
    feature_network=feature_network,
    photo_names=[os.path.basename(p) for p in paths],
    style_name=style if style in STYLES else style_file,
  )


@registry.PROBLEMS.register("neural_art")
def make_named_problem(split, batch_size, options):
  """make_problem with the registry's options (style, image_size, feature_network, data_dir)."""
  return make_problem(
    split,
    batch_size or 1,
    options.data_dir,
    options.style or DEFAULT_STYLE,
    options.image_size,
    options.feature_network,
  )
