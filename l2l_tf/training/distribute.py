"""tf.distribute strategies for data-parallel meta-training (one code path for all devices).

Each replica unrolls its own share of the meta-batch: with a meta-batch of B instances and R
replicas, replica r steps instances r*B/R .. (r+1)*B/R - 1, drawn from the same seed as in a
one-replica run (the whole meta-batch is sampled and each replica keeps its slice). The
meta-gradients are averaged over the replicas, which makes them the mean over the whole
meta-batch, so the result does not depend on R beyond float rounding.

Strategies (what scripts/train.py --strategy chooses):
  default       no tf.distribute strategy: one device, the single-device graph.
  mirrored      every local GPU, or the CPU devices (--cpu_devices splits a CPU into several).
  multi_worker  one process per host (TF_CONFIG names the cluster and this task), every host's
                GPUs or its CPU.
  tpu           a TPU (TPUClusterResolver: Colab, Cloud TPU VMs, or tpu=<name or address>).

Logical devices and collective ops are set up when TensorFlow initialises, so configure_cpu_devices
and make_strategy must run before the program's first TensorFlow op.
"""

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
TF_CONFIG = "TF_CONFIG"


def check_strategy_name(name):
  """Raises ValueError unless `name` is one of STRATEGIES."""
  if name not in STRATEGIES:
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def parse_tf_config(text):
  """The cluster description of a multi-worker run, from TF_CONFIG's JSON text.

  Returns the parsed dict; raises ValueError (one line) when it is not JSON or lacks a cluster
  with workers or a task that names one of the cluster's tasks.
  """
  if not text:
    raise ValueError(
      "--strategy=multi_worker needs the TF_CONFIG environment variable "
      '(e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
      '"task": {"type": "worker", "index": 0}})'
    )
  try:
    config = json.loads(text)
  except ValueError as e:
    raise ValueError(f"TF_CONFIG is not valid JSON ({e})") from None
  if not isinstance(config, dict):
    raise ValueError(f"TF_CONFIG must be a JSON object, got {text!r}")
  cluster, task = config.get("cluster"), config.get("task")
  if not isinstance(cluster, dict) or not any(
    isinstance(cluster.get(kind), list) and cluster[kind] for kind in ("chief", "worker")
  ):
    raise ValueError(
      'TF_CONFIG has no cluster with workers: it needs "cluster": {"worker": ["host:port", ...]}'
    )
  if not isinstance(task, dict) or "type" not in task or "index" not in task:
    raise ValueError('TF_CONFIG has no task: it needs "task": {"type": "worker", "index": N}')
  addresses = cluster.get(task["type"])
  index = task["index"]
  if (
    not isinstance(addresses, list) or not isinstance(index, int) or not 0 <= index < len(addresses)
  ):
    raise ValueError(f"TF_CONFIG's task {task} is not a task of its cluster {cluster}")
  return config


def check_strategy_flags(name, cpu_devices=0, environ=None):
  """Validates a strategy choice before anything runs (no TensorFlow op); raises ValueError."""
  check_strategy_name(name)
  if cpu_devices < 0:
    raise ValueError(f"--cpu_devices must be >= 0, got {cpu_devices}")
  if name == "multi_worker":
    parse_tf_config((os.environ if environ is None else environ).get(TF_CONFIG))


def configure_cpu_devices(count):
  """Splits the first CPU into `count` logical devices (count 0 or 1: leaves it whole).

  Must run before TensorFlow initialises; raises ValueError if it already has.
  """
  if count <= 1:
    return
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )
  except RuntimeError as e:  # TensorFlow is already running: too late to split its CPU
    raise ValueError(f"cannot split the CPU into {count} devices: {e}") from None


def make_strategy(name, tpu=None):
  """The tf.distribute.Strategy named `name`, or None for "default" (single device).

  mirrored uses every GPU, or else every logical CPU device; multi_worker reads TF_CONFIG;
  tpu connects to `tpu` (a name or grpc:// address; None: the local TPU or Colab's).
  """
  check_strategy_name(name)
  if name == "default":
    return None
  if name == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)
  if name == "multi_worker":
    parse_tf_config(os.environ.get(TF_CONFIG))
    return tf.distribute.MultiWorkerMirroredStrategy()
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


def num_replicas(strategy):
  """Replicas that share a meta-batch (1 without a strategy)."""
  return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def check_meta_batch(meta_batch, replicas):
  """Raises ValueError unless the meta-batch splits evenly over the replicas."""
  if meta_batch % replicas:
    raise ValueError(
      f"the meta-batch (--batch_size={meta_batch}) must be divisible by the "
      f"number of replicas ({replicas}): each replica unrolls an equal share"
    )


def instance_slice(values, replica, share, axis):
  """Instances replica*share .. (replica+1)*share - 1 of every tensor in `values` along `axis`."""
  index = (slice(None),) * axis + (slice(replica * share, (replica + 1) * share),)
  return tf.nest.map_structure(lambda x: x[index], values)


def shard_instances(strategy, values, share, axis):
  """Per-replica values: each replica gets its `share` of the instances along `axis`."""
  return strategy.experimental_distribute_values_from_function(
    lambda context: instance_slice(values, context.replica_id_in_sync_group, share, axis)
  )
