"""The package root: the documented workflow's names, none shadowing a Keras name."""

import gc
import weakref

import keras
import numpy as np

import l2l_tf
from l2l_tf import evaluation
from l2l_tf import update_rules


def test_every_public_name_resolves_and_none_clashes_with_keras():
  for name in l2l_tf.__all__:
    assert getattr(l2l_tf, name) is not None, name
  keras_names = set(dir(keras.optimizers)) | set(dir(keras.layers)) | set(dir(keras))
  assert not set(l2l_tf.__all__) & keras_names
  for workflow in (
    "MetaTrainer",
    "MetaTrainingConfig",
    "KerasModelProblem",
    "LearnedOptimizer",
    "load_optimizer",
    "CoordinatewiseLSTM",
    "NTMLBFGS",
  ):
    assert workflow in l2l_tf.__all__


def test_baseline_rules_live_in_update_rules_not_at_the_root():
  assert not hasattr(l2l_tf, "Adam") and not hasattr(l2l_tf, "SGD")
  assert l2l_tf.update_rules.make_baseline("adam", 0.1).name == "adam"


def test_trajectory_graph_cache_is_bounded_and_releases_problems():
  rule = update_rules.SGD(0.1)
  first = l2l_tf.QuadraticProblem(batch_size=2)
  first_ref = weakref.ref(first)
  evaluation.run_trajectories(first, rule, 0, 2)
  del first
  for _ in range(evaluation._MAX_COMPILED_RUNS):  # pylint: disable=protected-access
    losses = evaluation.run_trajectories(l2l_tf.QuadraticProblem(batch_size=2), rule, 0, 2)
  assert np.all(np.isfinite(losses))
  assert len(evaluation._compiled_runs) == evaluation._MAX_COMPILED_RUNS  # pylint: disable=protected-access
  gc.collect()
  assert first_ref() is None
