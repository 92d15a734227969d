"""Data-parallel meta-training throughput: one device, 2 logical CPU devices, 2 local workers.

Times whole meta-training trajectories (MetaTrainer.train_trajectory: every replica's unrolls,
the all-reduce of the meta-gradients and the meta-updates) in optimizee coordinate-steps per
second (coordinates x meta-batch x steps / seconds), for each of:

  one       no strategy (the single-device path, what --strategy=default runs)
  mirrored  MirroredStrategy over the CPU split into 2 logical devices (--cpu_devices=2)
  workers   MultiWorkerMirroredStrategy, 2 worker processes on loopback (ports chosen free)

    python benchmarks/distributed_throughput.py [--problem=quadratic|mnist] [--batch_size=N]
        [--trajectories=4] [--modes=one,mirrored,workers]

Each mode runs in its own processes: logical devices and collective ops are fixed when
TensorFlow starts. They run one after the other; the thread pools are TensorFlow's defaults
unless TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS say otherwise (they are inherited).
Prints one line per mode and the ratios to `one`:

    RESULT mode=mirrored replicas=2 coord_steps_per_s=123456 seconds_per_trajectory=1.23
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time

from absl import app
from absl import flags

_PROBLEM = flags.DEFINE_enum(
  "problem",
  "quadratic",
  ["quadratic", "mnist"],
  "quadratic: 10-dimensional; mnist: the 784-20-10 MLP on the embedded sample.",
)
_BATCH_SIZE = flags.DEFINE_integer(
  "batch_size",
  None,
  "Meta-batch (default: 128 quadratics, 2 MNIST networks); divisible by 2.",
  lower_bound=2,
)
_NUM_STEPS = flags.DEFINE_integer("num_steps", 40, "Optimizee steps per trajectory.", lower_bound=1)
_UNROLL = flags.DEFINE_integer("unroll_length", 20, "Steps per unroll.", lower_bound=1)
_TRAJECTORIES = flags.DEFINE_integer(
  "trajectories",
  4,
  "Timed trajectories per mode (after one untimed that traces the graphs).",
  lower_bound=1,
)
_MODES = flags.DEFINE_list("modes", ["one", "mirrored", "workers"], "Modes to time.")
_TIMEOUT = flags.DEFINE_integer("timeout", 900, "Seconds a mode may take before it is killed.")
# Internal: what one process of a mode runs (set by the driver).
_RUN = flags.DEFINE_enum("run", None, ["one", "mirrored", "worker"], "Internal.")

MODES = ("one", "mirrored", "workers")


def time_trajectories(strategy_name):
  """Runs in a mode's process: times train_trajectory; returns the result dict."""
  import keras  # pylint: disable=g-import-not-at-top
  from l2l_tf import learned_rule  # pylint: disable=g-import-not-at-top
  from l2l_tf import registry  # pylint: disable=g-import-not-at-top
  from l2l_tf.training import distribute  # pylint: disable=g-import-not-at-top
  from l2l_tf.training import meta_trainer  # pylint: disable=g-import-not-at-top

  distribute.configure_cpu_devices(2 if strategy_name == "mirrored" else 0)
  strategy = distribute.make_strategy(strategy_name)
  keras.utils.set_random_seed(0)
  batch_size = _BATCH_SIZE.value or (128 if _PROBLEM.value == "quadratic" else 2)
  problem = registry.make_problem(_PROBLEM.value, "train", batch_size)
  with strategy.scope() if strategy else contextlib.nullcontext():
    rule = learned_rule.LearnedUpdateRule(registry.make_cell("lstm", _PROBLEM.value))
  config = meta_trainer.MetaTrainingConfig(num_steps=_NUM_STEPS.value, unroll_length=_UNROLL.value)
  trainer = meta_trainer.MetaTrainer(
    rule, problem, problem, config, log=lambda line: None, strategy=strategy
  )
  trainer.train_trajectory(meta_trainer.trajectory_seed(0, 0, 0))  # traces the graphs
  start = time.perf_counter()
  for index in range(1, _TRAJECTORIES.value + 1):
    trainer.train_trajectory(meta_trainer.trajectory_seed(0, 0, index))
  seconds = (time.perf_counter() - start) / _TRAJECTORIES.value
  work = problem.num_coordinates() * batch_size * _NUM_STEPS.value
  return {
    "replicas": trainer.num_replicas,
    "seconds_per_trajectory": seconds,
    "coord_steps_per_s": work / seconds,
    "coordinates": problem.num_coordinates(),
    "batch_size": batch_size,
  }


def _free_ports(count):
  """Ports free on loopback now (bound to port 0, read, released together)."""
  sockets = [socket.socket() for _ in range(count)]
  try:
    for s in sockets:
      s.bind(("127.0.0.1", 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def _launch(run, tf_config=None):
  """One process of a mode: this script with --run and the driver's flags."""
  args = [
    sys.executable,
    os.path.abspath(__file__),
    f"--run={run}",
    f"--problem={_PROBLEM.value}",
    f"--num_steps={_NUM_STEPS.value}",
    f"--unroll_length={_UNROLL.value}",
    f"--trajectories={_TRAJECTORIES.value}",
  ]
  if _BATCH_SIZE.value:
    args.append(f"--batch_size={_BATCH_SIZE.value}")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  if tf_config:
    env["TF_CONFIG"] = json.dumps(tf_config)
  return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def measure(mode):
  """Runs `mode` in its own processes (always ended, bounded by --timeout); its result dict."""
  if mode == "workers":
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    processes = [
      _launch("worker", {"cluster": cluster, "task": {"type": "worker", "index": i}})
      for i in range(2)
    ]
  else:
    processes = [_launch(mode)]
  try:
    outputs = [p.communicate(timeout=_TIMEOUT.value) for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, (_, stderr) in zip(processes, outputs):
    if p.returncode:
      raise RuntimeError(f"mode {mode} failed:\n{stderr[-3000:]}")
  return json.loads(outputs[0][0].strip().splitlines()[-1])  # worker 0's line


def main(argv):
  del argv
  if _RUN.value:  # a mode's process: one JSON line on stdout
    strategy = {"one": "default", "worker": "multi_worker"}.get(_RUN.value, _RUN.value)
    print(json.dumps(time_trajectories(strategy)), flush=True)
    return
  unknown = set(_MODES.value) - set(MODES)
  if unknown:
    raise app.UsageError(f"--modes: unknown {sorted(unknown)}; choose from {MODES}")
  rates = {}
  for mode in _MODES.value:
    result = measure(mode)
    rates[mode] = result["coord_steps_per_s"]
    print(
      f"RESULT mode={mode} replicas={result['replicas']} problem={_PROBLEM.value} "
      f"coordinates={result['coordinates']} batch_size={result['batch_size']} "
      f"coord_steps_per_s={result['coord_steps_per_s']:.0f} "
      f"seconds_per_trajectory={result['seconds_per_trajectory']:.3f}",
      flush=True,
    )
  if "one" in rates:
    print(
      "ratio to one device: "
      + ", ".join(
        f"{mode} {rate / rates['one']:.2f}x" for mode, rate in rates.items() if mode != "one"
      )
    )


if __name__ == "__main__":
  app.run(main)
