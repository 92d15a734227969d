"""Neural Art (style transfer on an image's pixels): loss terms, feature networks, data, scripts."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from l2l_tf import evaluation
from l2l_tf import learned_rule
from l2l_tf import neural_art_figures
from l2l_tf import registry
from l2l_tf import update_rules
from l2l_tf.data import DataError
from l2l_tf.problems import neural_art

import repo_paths

ROOT = repo_paths.ROOT
SIZE = 32  # the smallest image VGG19's five blocks reduce to a non-empty map


def _image(height, width, seed):
  return np.random.default_rng(seed).random((height, width, 3)).astype(np.float32)


def _problem(feature_network, batch_size=2, image_size=SIZE):
  photos = [_image(40, 50, 0), _image(SIZE, 70, 1)]
  return neural_art.NeuralArtProblem(
    photos,
    _image(48, 48, 2),
    image_size=image_size,
    batch_size=batch_size,
    feature_network=feature_network,
  )


@pytest.fixture(scope="module")
def random_problem():
  return _problem(neural_art.RandomFilterFeatures(channels=(8, 8, 16)))


def _save(path, image):
  tf.io.write_file(str(path), tf.io.encode_png(tf.cast(image * 255, tf.uint8)))
  return str(path)


def test_content_loss_of_the_content_image_is_zero(random_problem):
  content = random_problem.content_images(3)
  terms = random_problem.loss_terms(content, content)
  np.testing.assert_array_equal(terms["content"].numpy(), [0.0, 0.0])
  noise = random_problem.init_params(3)["image"]
  assert np.all(random_problem.loss_terms(noise, content)["content"].numpy() > 0.01)


def test_gram_matrix_equals_a_direct_computation():
  features = np.random.default_rng(0).standard_normal((2, 3, 5, 4)).astype(np.float32)
  expected = np.stack([f.reshape(15, 4).T @ f.reshape(15, 4) / 15 for f in features])
  np.testing.assert_allclose(
    neural_art.gram_matrix(tf.constant(features)).numpy(), expected, rtol=1e-5, atol=1e-6
  )


def test_total_variation_of_a_constant_image_is_zero():
  constant = tf.fill([2, 6, 6, 3], 0.3)
  np.testing.assert_array_equal(neural_art.total_variation(constant).numpy(), [0.0, 0.0])
  ramp = np.tile(np.arange(6, dtype=np.float32)[None, :, None, None], [1, 1, 6, 3]) / 10
  # Rows differ by 0.1 and columns not at all: the mean squared vertical difference is 0.01.
  np.testing.assert_allclose(
    neural_art.total_variation(tf.constant(ramp)).numpy(), [0.01], rtol=1e-5
  )


def test_style_loss_is_zero_at_the_style_image_and_positive_elsewhere():
  style = _image(SIZE, SIZE, 2)
  problem = neural_art.NeuralArtProblem(
    [_image(SIZE, SIZE, 0)],
    style,
    image_size=SIZE,
    feature_network=neural_art.RandomFilterFeatures(channels=(8, 8, 16)),
  )
  terms = problem.loss_terms(tf.constant(style[None]), problem.content_images(0))
  assert terms["style"].numpy()[0] == pytest.approx(0.0, abs=1e-6)
  other = problem.loss_terms(problem.content_images(0), problem.content_images(0))
  assert other["style"].numpy()[0] > 1e-3


@pytest.mark.parametrize(
  "features",
  [
    lambda: neural_art.RandomFilterFeatures(channels=(8, 8, 16)),
    lambda: neural_art.VGG19Features(weights=None),  # the architecture, no download
  ],
  ids=["random", "vgg19"],
)
def test_both_feature_networks_give_the_same_loss_structure(features):
  problem = _problem(features())
  content = problem.content_images(1)
  image = problem.init_params(1)["image"]
  terms = problem.loss_terms(image, content)
  assert set(terms) == {"content", "style", "tv"}
  for value in terms.values():
    assert value.shape == [2] and np.all(np.isfinite(value.numpy()))
    assert np.all(value.numpy() > 0)
  assert problem.loss_terms(content, content)["content"].numpy() == pytest.approx([0, 0])
  np.testing.assert_allclose(terms["tv"], neural_art.total_variation(image))
  batch = tf.nest.map_structure(lambda x: x[0], problem.sample_batches(1, 0))
  np.testing.assert_allclose(
    problem.loss({"image": image}, batch),
    terms["content"] + 5.0 * terms["style"] + 2.0 * terms["tv"],
    rtol=1e-5,
  )
  # Targets: one Gram matrix [1, C, C] per style layer; content layers index the same maps.
  maps = problem.features(image)
  assert len(problem.style_grams) == len(problem.features.style_layers)
  for grams, layer in zip(problem.style_grams, problem.features.style_layers):
    assert grams.shape == [1, maps[layer].shape[-1], maps[layer].shape[-1]]
  assert max(problem.features.content_layers) < len(maps)


def test_auto_features_are_random_filters_unless_vgg19_weights_are_cached(tmp_path, monkeypatch):
  monkeypatch.setenv("KERAS_HOME", str(tmp_path))
  assert neural_art.make_feature_network("auto").name == "random"
  with pytest.raises(DataError, match=neural_art.VGG19_WEIGHTS_FILE):
    neural_art.make_feature_network("vgg19")
  config = registry.make_problem("neural_art", "test", 1).get_config()
  assert config["feature_network"] == "random"
  assert "random-filter" in config["feature_network_description"]


def test_crops_lie_inside_their_photo_and_do_not_depend_on_batch_size(random_problem):
  photo, top, left = (x.numpy() for x in random_problem.crop_positions(7))
  heights, widths = np.array([40, SIZE]), np.array([50, 70])
  assert np.all(top >= 0) and np.all(top + SIZE <= heights[photo])
  assert np.all(left >= 0) and np.all(left + SIZE <= widths[photo])
  crops = random_problem.content_images(7).numpy()
  expected = random_problem.photos.numpy()[
    photo[0], top[0] : top[0] + SIZE, left[0] : left[0] + SIZE
  ]
  np.testing.assert_array_equal(crops[0], expected)
  first = random_problem.first_instances(1)
  np.testing.assert_array_equal(first.content_images(7).numpy(), crops[:1])
  np.testing.assert_array_equal(
    first.init_params(7)["image"], random_problem.init_params(7)["image"][:1]
  )


def test_held_out_splits_share_no_photo():
  names = {
    split: {os.path.basename(p) for p in neural_art.content_photo_paths(split)}
    for split in neural_art.SPLITS
  }
  assert not names["train"] & names["test"] and not names["validation"] & names["test"]
  assert not names["train"] & names["validation"]
  assert all(names.values())


def test_a_user_directory_replaces_the_shipped_photos(tmp_path):
  for split in neural_art.SPLITS:
    os.makedirs(tmp_path / split)
    _save(tmp_path / split / f"{split}.png", _image(20, 24, 0))
  problem = registry.make_problem(
    "neural_art", "validation", 2, data_dir=str(tmp_path), image_size=16, style="brick"
  )
  assert problem.get_config()["photos"] == ["validation.png"]
  assert problem.content_images(0).shape == [2, 16, 16, 3]


@pytest.mark.parametrize(
  "kind,message",
  [
    ("missing", "no such style image"),
    ("not_an_image", "not an image"),
    ("small", "smaller than the 32x32 crop"),
  ],
)
def test_a_bad_style_file_is_named_in_the_error(kind, message, tmp_path):
  path = str(tmp_path / "style.png")
  if kind == "not_an_image":
    with open(path, "w") as f:
      f.write("not pixels")
  elif kind == "small":
    _save(path, _image(20, 40, 0))
  with pytest.raises(DataError, match=message) as error:
    registry.make_problem("neural_art", "test", 1, style=path, image_size=SIZE)
  assert path in str(error.value) and "\n" not in str(error.value)


def test_content_photos_smaller_than_the_crop_are_named(tmp_path):
  os.makedirs(tmp_path / "test")
  small = _save(tmp_path / "test" / "tiny.png", _image(50, 40, 0))
  with pytest.raises(DataError, match="smaller than the 48x48 crop") as error:
    registry.make_problem("neural_art", "test", 1, data_dir=str(tmp_path), image_size=48)
  assert small in str(error.value)
  with pytest.raises(DataError, match="no such image directory"):
    registry.make_problem("neural_art", "train", 1, data_dir=str(tmp_path))


@pytest.mark.parametrize(
  "flag,message",
  [
    ("--style={missing}", "{missing}: no such style image"),
    ("--data_dir={directory}", "{directory}/validation: no such image directory"),
  ],
)
def test_scripts_report_bad_images_in_one_line(flag, message, tmp_path):
  paths = {"missing": str(tmp_path / "nowhere.png"), "directory": str(tmp_path)}
  os.makedirs(tmp_path / "test")
  _save(tmp_path / "test" / "photo.png", _image(64, 64, 0))  # only validation/ is missing
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "scripts", "evaluate.py"),
      "--problem=neural_art",
      "--optimizers=adam",
      "--notune",
      flag.format(**paths),
    ],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith("error: " + message.format(**paths))
  assert "Traceback" not in result.stderr


def test_a_learned_optimizer_steps_the_pixels_and_adam_lowers_the_loss(random_problem):
  # An untrained cell: its steps must run and move every image, not necessarily downhill.
  cell = learned_rule.LearnedUpdateRule(registry.make_cell("lstm", "neural_art"))
  start = random_problem.init_params(5)["image"].numpy()
  images, losses = neural_art_figures.final_images(
    random_problem, {"lstm": cell}, seed=5, num_steps=3
  )["lstm"]
  assert images.shape == start.shape and np.all(np.isfinite(losses))
  assert np.all(np.abs(images - start).max(axis=(1, 2, 3)) > 0)
  adam = update_rules.make_baseline("adam", 0.05)
  losses = evaluation.run_trajectories(random_problem, adam, seed=5, num_steps=6)
  assert losses.shape == (7, 2) and np.all(np.isfinite(losses))
  assert np.all(losses[-1] < 0.8 * losses[0])


def test_the_image_grid_is_a_png(random_problem, tmp_path):
  results = {
    "results": {
      "adam": {"learning_rate": 0.05, "final_loss_mean": 1.0},
      "sgd": {"learning_rate": 0.1, "final_loss_mean": 2.0},
    }
  }
  path = str(tmp_path / "eval_images.png")
  neural_art_figures.write_grid(path, random_problem, results, {}, seed=0, num_steps=2)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert neural_art_figures.grid_path("a/eval.png") == "a/eval_images.png"
  assert sorted(neural_art_figures.evaluated_rules(results, {})) == ["adam", "sgd"]
