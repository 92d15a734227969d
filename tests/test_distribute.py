"""Data-parallel meta-training under tf.distribute: replicas reproduce the one-device result.

Logical CPU devices and collective ops are fixed when TensorFlow initialises, and this test
session has initialised it already, so the distributed runs happen in subprocesses: this file
run as a script (`python tests/test_distribute.py mirrored OUT.npz`) or scripts/train.py.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import repo_paths

# Subprocesses with logical devices and local workers: the slow tier.
pytestmark = pytest.mark.slow

ROOT = repo_paths.ROOT
TIMEOUT_SECONDS = 240
# A tiny run of scripts/train.py: 4 quadratics, 2 epochs of 2 trajectories of 2 unrolls.
TINY_RUN = [
  "--problem=quadratic",
  "--batch_size=4",
  "--num_steps=4",
  "--unroll_length=2",
  "--epochs=2",
  "--trajectories_per_epoch=2",
  "--num_validation_problems=4",
  "--meta_learning_rate=0.01",
  "--log_every=100",
]


def _environment(**extra):
  """The subprocesses' environment: this worktree's l2l_tf, quiet TensorFlow."""
  path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
  return dict(os.environ, PYTHONPATH=path, TF_CPP_MIN_LOG_LEVEL="3", **extra)


def _train(*args, **env):
  return subprocess.run(
    [sys.executable, os.path.join(ROOT, "scripts", "train.py"), *args],
    capture_output=True,
    text=True,
    env=_environment(**env),
    timeout=TIMEOUT_SECONDS,
  )


@pytest.fixture(scope="module")
def one_device_weights(tmp_path_factory):
  """The final checkpoint's weights of TINY_RUN on one device (what any replica count gives)."""
  run_dir = str(tmp_path_factory.mktemp("one_device") / "run")
  result = _train(*TINY_RUN, f"--output_dir={run_dir}")
  assert result.returncode == 0, result.stderr[-3000:]
  return _checkpoint_weights(run_dir)


def _assert_same_optimizer(weights, expected):
  """Weights and meta-optimizer state equal up to float rounding, and nothing missing."""
  assert weights.keys() == expected.keys() and any(k.startswith("cells/") for k in expected)
  for name in expected:
    np.testing.assert_allclose(weights[name], expected[name], rtol=1e-4, atol=1e-6, err_msg=name)


def _checkpoint_weights(run_dir):
  """{name: value} of every variable in a run's newest checkpoint."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  reader = tf.train.load_checkpoint(os.path.join(run_dir, "checkpoints"))
  return {
    name: reader.get_tensor(name)
    for name in reader.get_variable_to_shape_map()
    if name.startswith(("cells/", "meta_optimizer/"))
  }


# --- run in a subprocess: one device against MirroredStrategy on two logical CPUs ------------


def _weights(rule):
  return [v.numpy().copy() for v in rule.trainable_variables]


def _tiny_trainer(strategy):
  """A trainer of 8 quadratics (4 per replica on 2), its rule seeded like every other one."""
  import keras  # pylint: disable=g-import-not-at-top
  import l2l_tf  # pylint: disable=g-import-not-at-top
  from l2l_tf.training import meta_trainer  # pylint: disable=g-import-not-at-top

  keras.utils.set_random_seed(0)
  with strategy.scope() if strategy else contextlib.nullcontext():
    rule = l2l_tf.LearnedUpdateRule(
      l2l_tf.CoordinatewiseLSTM(preprocessing="identity", output_scale=1.0)
    )
  config = meta_trainer.MetaTrainingConfig(
    num_steps=8,
    unroll_length=4,
    epochs=1,
    trajectories_per_epoch=2,
    meta_learning_rate=0.01,
    jit_compile="false",
  )
  return meta_trainer.MetaTrainer(
    rule,
    l2l_tf.QuadraticProblem(batch_size=8),
    l2l_tf.QuadraticProblem(batch_size=4),
    config,
    log=lambda line: None,
    strategy=strategy,
  )


def _first_meta_gradient(trainer, seed):
  """The objective and (clipped) meta-gradient of trajectory `seed`'s first unroll."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  problem, length = trainer.problem, trainer.config.unroll_length
  params = problem.init_params(seed)
  batches = problem.sample_batches(seed, trainer.config.num_steps)
  first = tf.nest.map_structure(lambda x: x[0], batches)
  window = tf.nest.map_structure(lambda x: x[1 : 1 + length], batches)
  trajectory = trainer._start[0](
    trainer._shard(problem, params, 0), trainer._shard(problem, first, 0)
  )
  objective, _, grads, finite = trainer._train_unroll[0](
    trajectory, trainer._shard(problem, window, 1)
  )
  assert bool(finite)
  if trainer.strategy:  # per replica, all equal
    grads = [trainer.strategy.experimental_local_results(g)[0] for g in grads]
  return float(objective), [g.numpy() for g in grads]


def compare_mirrored(output):
  """Meta-gradient and weights after 4 meta-steps, on one device and on 2 replicas."""
  from l2l_tf.training import distribute  # pylint: disable=g-import-not-at-top
  from l2l_tf.training import meta_trainer  # pylint: disable=g-import-not-at-top

  distribute.configure_cpu_devices(2)
  results = {}
  for name, strategy in (("one", None), ("two", distribute.make_strategy("mirrored"))):
    trainer = _tiny_trainer(strategy)
    results[f"{name}_replicas"] = trainer.num_replicas
    results[f"{name}_initial"] = _weights(trainer.rule)
    objective, results[f"{name}_gradient"] = _first_meta_gradient(
      trainer, meta_trainer.trajectory_seed(0, 0, 0)
    )
    results[f"{name}_objective"] = objective
    for index in range(2):  # 2 trajectories of 2 unrolls: 4 meta-steps
      trainer.train_trajectory(meta_trainer.trajectory_seed(0, 0, index))
    results[f"{name}_steps"] = int(trainer.meta_optimizer.iterations.numpy())
    results[f"{name}_weights"] = _weights(trainer.rule)
    # Adam's moments: the meta-gradients as applied (the weights alone hide their scale).
    results[f"{name}_moments"] = [
      v.numpy().copy() for v in trainer.meta_optimizer.variables if v.shape.rank
    ]
  np.savez(output, **{key: np.array(value, dtype=object) for key, value in results.items()})


# --- the tests -------------------------------------------------------------------------------


def test_two_mirrored_replicas_give_the_one_device_meta_gradient_and_weights(tmp_path):
  output = str(tmp_path / "mirrored.npz")
  result = subprocess.run(
    [sys.executable, os.path.abspath(__file__), "mirrored", output],
    capture_output=True,
    text=True,
    env=_environment(),
    timeout=TIMEOUT_SECONDS,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  runs = {
    key: value.item() if value.shape == () else list(value)
    for key, value in np.load(output, allow_pickle=True).items()
  }
  assert (runs["one_replicas"], runs["two_replicas"]) == (1, 2)
  assert runs["one_steps"] == runs["two_steps"] == 4
  assert runs["two_objective"] == pytest.approx(runs["one_objective"], rel=1e-5)
  for one, two, initial in zip(runs["one_gradient"], runs["two_gradient"], runs["one_initial"]):
    np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-7)
  for one, two in zip(runs["one_initial"], runs["two_initial"]):
    np.testing.assert_array_equal(two, one)
  moved = max(np.abs(a - b).max() for a, b in zip(runs["one_weights"], runs["one_initial"]))
  assert moved > 1e-3  # training changed the weights by far more than the tolerance below
  for one, two in zip(runs["one_weights"], runs["two_weights"]):
    np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-6)
  assert len(runs["one_moments"]) == 2 * len(runs["one_weights"])
  for one, two in zip(runs["one_moments"], runs["two_moments"]):
    np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-9)


def _free_ports(count):
  """Ports free on the loopback interface now (bound to port 0, read, released)."""
  with contextlib.ExitStack() as stack:
    sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
    for s in sockets:
      s.bind(("127.0.0.1", 0))
    return [s.getsockname()[1] for s in sockets]


def _run_two_workers(tmp_path):
  """TINY_RUN by 2 worker processes on loopback into tmp_path/worker{0,1}; [(code, out, err)].

  Both are always ended, and each may take TIMEOUT_SECONDS at most.
  """
  cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
  workers = []
  try:
    for index in range(2):
      tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
      workers.append(
        subprocess.Popen(
          [
            sys.executable,
            os.path.join(ROOT, "scripts", "train.py"),
            *TINY_RUN,
            "--strategy=multi_worker",
            f"--output_dir={tmp_path / f'worker{index}'}",
          ],
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
          env=_environment(TF_CONFIG=tf_config),
        )
      )
    outputs = [worker.communicate(timeout=TIMEOUT_SECONDS) for worker in workers]
  finally:
    for worker in workers:
      if worker.poll() is None:
        worker.kill()
        worker.wait()
  return [(worker.returncode, *output) for worker, output in zip(workers, outputs)]


def test_two_local_workers_meta_train_to_identical_weights(tmp_path, one_device_weights):
  for returncode, stdout, stderr in _run_two_workers(tmp_path):
    assert returncode == 0, stderr[-3000:]
    assert "on 2 replicas (multi_worker)" in stdout
  histories = [json.loads((tmp_path / f"worker{i}" / "history.json").read_text()) for i in range(2)]
  assert [h["epoch"] for h in histories[0]] == [1, 2]
  assert [h["meta_loss"] for h in histories[0]] == [h["meta_loss"] for h in histories[1]]
  first, second = (_checkpoint_weights(str(tmp_path / f"worker{i}")) for i in range(2))
  assert first.keys() == second.keys() and any(k.startswith("cells/") for k in first)
  for name in first:
    np.testing.assert_array_equal(first[name], second[name], err_msg=name)
  _assert_same_optimizer(first, one_device_weights)  # each worker unrolled its own half
  # Worker 1 loses its epoch-2 checkpoint: resumed at different epochs, both workers stop.
  checkpoints = tmp_path / "worker1" / "checkpoints"
  for path in checkpoints.iterdir():
    if path.name.startswith("ckpt-2") or path.name == "checkpoint":
      path.unlink()
  for returncode, _, stderr in _run_two_workers(tmp_path):
    assert returncode == 1, stderr[-3000:]
    assert (
      stderr.strip().splitlines()[-1].startswith("error: the workers resumed at different epochs")
    ), stderr[-3000:]


def test_a_checkpoint_of_two_replicas_resumes_on_one(tmp_path, one_device_weights):
  killed = _train(
    *TINY_RUN,
    f"--output_dir={tmp_path / 'run'}",
    "--strategy=mirrored",
    "--cpu_devices=2",
    L2L_TF_TEST_CRASH_AT="after_checkpoint@1",
  )
  assert killed.returncode == -9, killed.stderr[-3000:]  # killed just after epoch 1's checkpoint
  assert "on 2 replicas (mirrored)" in killed.stdout
  resumed = _train(*TINY_RUN, f"--output_dir={tmp_path / 'run'}")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resuming" in resumed.stdout and "at epoch 1" in resumed.stdout
  history = json.loads((tmp_path / "run" / "history.json").read_text())
  assert [h["epoch"] for h in history] == [1, 2]
  # Split or not, the same meta-batches give the same optimizer: an uninterrupted 1-device run.
  _assert_same_optimizer(_checkpoint_weights(str(tmp_path / "run")), one_device_weights)


@pytest.mark.parametrize(
  "args, env, message",
  [
    (["--strategy=parallel"], {}, "unknown strategy 'parallel'"),
    (
      ["--strategy=mirrored", "--cpu_devices=2", "--batch_size=3"],
      {},
      r"meta-batch \(--batch_size=3\) must be divisible by the number of replicas \(2\)",
    ),
    (["--strategy=multi_worker"], {"TF_CONFIG": "{cluster"}, "TF_CONFIG is not valid JSON"),
  ],
)
def test_bad_distribution_settings_are_one_error_line_before_any_work(tmp_path, args, env, message):
  import re  # pylint: disable=g-import-not-at-top

  result = _train(*TINY_RUN, f"--output_dir={tmp_path / 'run'}", *args, **env)
  assert result.returncode == 1
  # TensorFlow's C++ start-up lines may precede it; ours is the one error line, at the end.
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert errors == result.stderr.strip().splitlines()[-1:], result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  assert re.search(message, errors[0]), errors[0]
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
  "text, message",
  [
    (None, "needs the TF_CONFIG environment variable"),
    ("{cluster", "TF_CONFIG is not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "TF_CONFIG has no cluster with workers"),
    ('{"cluster": {"worker": ["localhost:1"]}}', "TF_CONFIG has no task"),
    ("[1, 2]", "must be a JSON object"),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "no cluster"),
    (
      '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
      "is not a task of its cluster",
    ),
    (
      '{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}',
      "is not a task of its cluster",
    ),
  ],
)
def test_tf_config_is_checked(text, message):
  from l2l_tf.training import distribute  # pylint: disable=g-import-not-at-top

  with pytest.raises(ValueError, match=message):
    distribute.parse_tf_config(text)


def test_a_valid_tf_config_is_accepted():
  from l2l_tf.training import distribute  # pylint: disable=g-import-not-at-top

  text = '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}'
  assert distribute.parse_tf_config(text)["task"]["index"] == 1


def test_a_replica_share_of_a_problem_keeps_its_instances():
  import l2l_tf  # pylint: disable=g-import-not-at-top
  from l2l_tf.problems import scaled  # pylint: disable=g-import-not-at-top
  from l2l_tf.training import distribute  # pylint: disable=g-import-not-at-top

  problem = scaled.RandomlyScaledProblem(l2l_tf.QuadraticProblem(batch_size=6), 10.0)
  share = problem.with_batch_size(3)
  assert (share.batch_size, share.problem.batch_size, problem.batch_size) == (3, 3, 6)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  params = problem.init_params(4)
  step = tf.nest.map_structure(lambda x: x[1], problem.sample_batches(4, 2))
  whole = problem.loss(params, step).numpy()
  second_half = share.loss(
    distribute.instance_slice(params, 1, 3, axis=0), distribute.instance_slice(step, 1, 3, axis=0)
  ).numpy()
  np.testing.assert_array_equal(second_half, whole[3:])


if __name__ == "__main__":
  if sys.argv[1:2] == ["mirrored"]:
    compare_mirrored(sys.argv[2])
  else:
    sys.exit(f"usage: {sys.argv[0]} mirrored OUTPUT.npz")
