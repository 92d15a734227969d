"""Peak memory of one meta-gradient, with and without recomputation (MetaTrainingConfig.recompute).

One meta-gradient = the forward and backward pass of one truncated unroll of the paper's
coordinatewise LSTM (2 x 20 units, log_sign preprocessing) on an MNIST MLP, the graph that
MetaTrainer runs per meta-step. Two optimizees, both on the embedded MNIST sample:

  mnist: the paper's 784-20-10 sigmoid MLP (15,910 parameters), unrolls of --mnist_unroll;
  large: a 784-1260-10 sigmoid MLP (1,001,710 parameters), unrolls of --large_unroll.

    python benchmarks/meta_training_memory.py [--problems=mnist,large]
        [--recompute=none,steps,blocks] [--mnist_unroll=20] [--large_unroll=2,4]
        [--lstm_kernels=graph,native] [--jit=false] [--max_rss_mib=4608]
        [--min_available_mib=1024] [--output_json=FILE]

Each configuration runs in its own subprocess, one at a time (TensorFlow does not return
memory to the OS, and tf.config.experimental.get_memory_info does not work on CPU); its peak
resident set size comes from os.wait4, the per-child form of getrusage(RUSAGE_CHILDREN)'s
ru_maxrss. A child that passes --max_rss_mib, or leaves the machine less than
--min_available_mib, is killed and reported as over the limit (memory may be shared). The
"setup" column is the child's peak before the meta-gradient is traced (TensorFlow, the data, the
problem); "seconds" is the median of --repeats meta-gradients after a first, compiling one.
Prints one line per configuration, then a table with memory above setup and time relative
to recompute=none with the same LSTM kernel (--lstm_kernels: graph ops, or the native CPU
ops of l2l_tf/kernels, which keep only the new state of a step for the backward pass):

    RESULT problem=mnist kernel=graph recompute=steps unroll=20 peak_mib=1097 setup_mib=683 ...

--output_json writes the reports (results/meta_training_memory.json feeds docs/RESULTS.md).
"""

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

_PROBLEMS = flags.DEFINE_list("problems", ["mnist", "large"], "Optimizees: mnist, large.")
_RECOMPUTE = flags.DEFINE_list(
  "recompute", ["none", "steps", "blocks"], "Recompute modes to measure."
)
_MNIST_UNROLL = flags.DEFINE_list("mnist_unroll", ["20"], "Unroll lengths on mnist.")
_LARGE_UNROLL = flags.DEFINE_list("large_unroll", ["2", "4"], "Unroll lengths on large.")
_KERNELS = flags.DEFINE_list("lstm_kernels", ["graph"], "LSTM kernels: graph, native.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write the reports here (JSON).")
_JIT = flags.DEFINE_enum("jit", "false", ["false", "true"], "jit_compile of the meta-gradient.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed meta-gradients per configuration.")
_MAX_RSS_MIB = flags.DEFINE_integer(
  "max_rss_mib",
  4608,
  "Kill a configuration whose resident size passes this (MiB); it is reported as over the limit.",
)
_MIN_AVAILABLE_MIB = flags.DEFINE_integer(
  "min_available_mib",
  1024,
  "Kill a configuration that leaves the machine less than this "
  "available memory (MiB); it is reported as over the limit.",
)
_CHILD = flags.DEFINE_string("child", None, "Internal: PROBLEM,RECOMPUTE,UNROLL,KERNEL to measure.")

HIDDEN_SIZES = {"mnist": (20,), "large": (1260,)}


def measure_in_this_process(problem_name, recompute, unroll_length, kernel, jit, repeats):
  """Builds the problem and times meta-gradients; prints a JSON line for the parent."""
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from l2l_tf import learned_rule  # pylint: disable=g-import-not-at-top
  from l2l_tf import registry  # pylint: disable=g-import-not-at-top
  from l2l_tf.cells import coordinatewise_lstm  # pylint: disable=g-import-not-at-top
  from l2l_tf.training import unroll as unroll_lib  # pylint: disable=g-import-not-at-top

  if kernel == "native":
    from l2l_tf import kernels  # pylint: disable=g-import-not-at-top

    kernels.load()  # before the setup peak: the library is not the meta-gradient's memory

  keras.utils.set_random_seed(0)  # the same optimizer weights in every configuration
  problem = registry.make_problem("mnist", "train", hidden_sizes=HIDDEN_SIZES[problem_name])
  rule = learned_rule.LearnedUpdateRule(registry.make_cell("lstm", "mnist"))
  batches = problem.sample_batches(0, unroll_length)
  first = tf.nest.map_structure(lambda x: x[0], batches)
  rest = tf.nest.map_structure(lambda x: x[1:], batches)
  trajectory = unroll_lib.start_trajectory(problem, rule, problem.init_params(0), first)
  setup_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

  @tf.function(jit_compile=jit, autograph=False)
  def meta_gradient(trajectory, batches):
    with tf.GradientTape() as tape:
      meta_loss, _, _ = unroll_lib.unroll(problem, rule, trajectory, batches, recompute=recompute)
    return meta_loss, tape.gradient(meta_loss, rule.trainable_variables)

  times = []
  for _ in range(repeats + 1):  # the first call traces (with the kernel) and compiles
    start = time.perf_counter()
    with coordinatewise_lstm.lstm_kernel(kernel):
      meta_loss, grads = meta_gradient(trajectory, rest)
    grad_norm = float(tf.linalg.global_norm(grads))
    times.append(time.perf_counter() - start)
  print(
    json.dumps(
      {
        "setup_mib": setup_kib / 1024,
        "seconds": float(np.median(times[1:])),
        "meta_loss": float(meta_loss),
        "grad_norm": grad_norm,
        "coordinates": problem.num_coordinates(),
      }
    ),
    flush=True,
  )


def _proc_field_mib(path, field, default):
  """A "Field:   N kB" line of a /proc file, in MiB (`default` if the file or field is gone)."""
  try:
    with open(path) as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return default


def _limit_passed(pid):
  """Which limit child `pid` passes: "max_rss_mib", "min_available_mib" or None."""
  if _proc_field_mib(f"/proc/{pid}/status", "VmRSS", 0) > _MAX_RSS_MIB.value:
    return "max_rss_mib"
  if _proc_field_mib("/proc/meminfo", "MemAvailable", math.inf) < _MIN_AVAILABLE_MIB.value:
    return "min_available_mib"
  return None


def run_child(problem_name, recompute, unroll_length, kernel):
  """Measures one configuration in a subprocess; returns its report with peak_mib added.

  A child whose resident size passes --max_rss_mib, or that leaves the machine less than
  --min_available_mib, is killed (memory here is shared with other jobs) and reported with
  peak_mib None and the limit in stopped_by.
  """
  command = [
    sys.executable,
    os.path.abspath(__file__),
    f"--child={problem_name},{recompute},{unroll_length},{kernel}",
    f"--jit={_JIT.value}",
    f"--repeats={_REPEATS.value}",
  ]
  report = {
    "problem": problem_name,
    "lstm_kernel": kernel,
    "recompute": recompute,
    "unroll": unroll_length,
  }
  with tempfile.TemporaryFile("w+") as output:
    process = subprocess.Popen(command, stdout=output, text=True)
    stopped_by = None
    while True:
      # wait4 reports this child's own peak RSS (RUSAGE_CHILDREN: the max over all children).
      pid, status, usage = os.wait4(process.pid, os.WNOHANG)
      if pid:
        break
      if not stopped_by:
        stopped_by = _limit_passed(process.pid)
        if stopped_by:
          process.kill()
      time.sleep(0.02)
    process.returncode = os.waitstatus_to_exitcode(status)
    if stopped_by:
      return dict(report, peak_mib=None, stopped_by=stopped_by)
    if process.returncode:
      raise RuntimeError(f"{' '.join(command)} failed with exit code {process.returncode}")
    output.seek(0)
    report.update(json.loads(output.read().strip().splitlines()[-1]))
  return dict(report, peak_mib=usage.ru_maxrss / 1024)  # ru_maxrss is in KiB on Linux


def result_line(report):
  """The RESULT line of one configuration."""
  line = (
    f"RESULT problem={report['problem']} kernel={report['lstm_kernel']} "
    f"recompute={report['recompute']} unroll={report['unroll']}"
  )
  if report["peak_mib"] is None:
    limit = report["stopped_by"]
    return f"{line} peak_mib=stopped({limit}={flags.FLAGS[limit].value})"
  return (
    f"{line} peak_mib={report['peak_mib']:.0f} setup_mib={report['setup_mib']:.0f} "
    f"seconds={report['seconds']:.2f} meta_loss={report['meta_loss']:.6g} "
    f"grad_norm={report['grad_norm']:.6g}"
  )


def print_table(reports):
  """Peak memory and time per configuration, relative to recompute=none on the same problem,
  unroll and kernel."""
  plain = {
    (r["problem"], r["unroll"], r["lstm_kernel"]): r
    for r in reports
    if r["recompute"] == "none" and r["peak_mib"] is not None
  }
  print(
    f"{'problem':8} {'kernel':6} {'unroll':>6} {'recompute':9} {'peak MiB':>9} {'setup MiB':>9} "
    f"{'peak-setup':>10} {'seconds':>8} {'memory x':>8} {'time x':>7}"
  )
  for r in reports:
    head = f"{r['problem']:8} {r['lstm_kernel']:6} {r['unroll']:>6} {r['recompute']:9}"
    if r["peak_mib"] is None:
      print(f"{head} {'stopped':>9}  (passed --{r['stopped_by']})")
      continue
    above_setup = r["peak_mib"] - r["setup_mib"]
    base = plain.get((r["problem"], r["unroll"], r["lstm_kernel"]))
    memory_ratio = time_ratio = float("nan")
    if base:
      memory_ratio = above_setup / (base["peak_mib"] - base["setup_mib"])
      time_ratio = r["seconds"] / base["seconds"]
    print(
      f"{head} {r['peak_mib']:>9.0f} {r['setup_mib']:>9.0f} {above_setup:>10.0f} "
      f"{r['seconds']:>8.2f} {memory_ratio:>8.2f} {time_ratio:>7.2f}"
    )


def main(argv):
  del argv
  if _CHILD.value:
    problem_name, recompute, unroll_length, kernel = _CHILD.value.split(",")
    measure_in_this_process(
      problem_name, recompute, int(unroll_length), kernel, _JIT.value == "true", _REPEATS.value
    )
    return
  for name in _PROBLEMS.value:
    if name not in HIDDEN_SIZES:
      raise app.UsageError(f"unknown problem {name!r}; choose from {sorted(HIDDEN_SIZES)}")
  for kernel in _KERNELS.value:
    if kernel not in ("graph", "native"):
      raise app.UsageError(f"unknown LSTM kernel {kernel!r}; choose from graph, native")
  if "native" in _KERNELS.value and _JIT.value == "true":
    raise app.UsageError("the native LSTM kernel has no XLA lowering: use --jit=false")
  reports = []
  for name in _PROBLEMS.value:
    unrolls = _MNIST_UNROLL.value if name == "mnist" else _LARGE_UNROLL.value
    for unroll_length in unrolls:
      for kernel in _KERNELS.value:
        for recompute in _RECOMPUTE.value:  # one configuration at a time: memory is shared
          reports.append(run_child(name, recompute, int(unroll_length), kernel))
          print(result_line(reports[-1]), flush=True)
  print_table(reports)
  if _OUTPUT_JSON.value:
    from l2l_tf import evaluation  # pylint: disable=g-import-not-at-top  # loads TensorFlow

    evaluation.write_json(
      {"jit_compile": _JIT.value == "true", "repeats": _REPEATS.value, "results": reports},
      _OUTPUT_JSON.value,
    )
    print(f"wrote {_OUTPUT_JSON.value}")


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  app.run(main)
