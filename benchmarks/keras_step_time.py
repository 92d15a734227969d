"""model.fit step time of LearnedOptimizer, for every cell, vs keras Adam on the MNIST MLP.

The MNIST MLP of the paper (784-20-10, sigmoid; 15,910 parameters), minibatch 128, synthetic
data (the timing does not depend on the pixels). Each learned optimizer is a cell with the
paper's MNIST settings (registry.make_cell(name, "mnist"): 2 x 20 units, log_sign
preprocessing), randomly initialised: its cost does not depend on its weights. The sharing
cells step all 15,910 coordinates as one instance (one parameter group); NTM-BFGS's dense
15,910^2 memory is over its max_dense_coordinates, so it is refused and reported as such.
Times are medians of per-batch wall and process CPU times inside model.fit (a Keras
callback), after warm-up batches that include tracing; the optimizers are timed in alternating
rounds so that all see the same load on a shared machine. On a loaded machine the CPU-time
ratio is the steadier one: a 1 ms Adam step often runs inside one scheduler slice while a
longer step is preempted, which inflates the wall-time ratio.

    python benchmarks/keras_step_time.py [--steps=200] [--rounds=10] [--jit_compile=false,true]
        [--cells=lstm,lstm_gac,ntm_bfgs,ntm_lbfgs] [--output_json=results/keras_step_time.json]

Prints one line per (optimizer, jit), then each cell's ratio and the headline (the
coordinatewise LSTM's ratio at the first --jit_compile setting):
    RESULT optimizer=adam jit=false step_ms=... cpu_ms=... state_floats_per_param=2.0 ...
    RESULT optimizer=ntm_bfgs jit=false refused="..."
    RESULT jit=false cell=lstm_gac over_adam_step_time=... over_adam_cpu_time=...
    RESULT learned_over_adam_step_time=... learned_over_adam_cpu_time=...
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import time  # pylint: disable=g-import-not-at-top,wrong-import-position

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import keras  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

import l2l_tf  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf import evaluation  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf import registry  # pylint: disable=g-import-not-at-top,wrong-import-position

_STEPS = flags.DEFINE_integer("steps", 200, "Timed batches per optimizer.", lower_bound=10)
_ROUNDS = flags.DEFINE_integer(
  "rounds", 10, "Alternating timing rounds (Adam, learned, ...).", lower_bound=1
)
_WARMUP = flags.DEFINE_integer("warmup", 20, "Untimed batches (tracing) first.", lower_bound=2)
_JIT = flags.DEFINE_list("jit_compile", ["false"], "model.fit jit_compile settings to time.")
_CELLS = flags.DEFINE_list(
  "cells", list(registry.CELLS), "Learned optimizers (registry names) to time against Adam."
)
_OUTPUT_JSON = flags.DEFINE_string(
  "output_json", None, "Also write every timing as JSON here (with provenance)."
)
_BATCH = 128


class _BatchTimer(keras.callbacks.Callback):
  """Wall and process CPU time of every training batch."""

  def __init__(self):
    super().__init__()
    self.times, self.cpu_times = [], []

  def on_train_batch_begin(self, batch, logs=None):
    self._start = time.perf_counter(), time.process_time()

  def on_train_batch_end(self, batch, logs=None):
    self.times.append(time.perf_counter() - self._start[0])
    self.cpu_times.append(time.process_time() - self._start[1])


def make_model():
  keras.utils.set_random_seed(0)
  return keras.Sequential(
    [keras.Input((784,)), keras.layers.Dense(20, activation="sigmoid"), keras.layers.Dense(10)]
  )


def state_per_param(model, optimizer):
  params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  slots = [
    v
    for v in optimizer.variables
    if v is not optimizer.iterations and "learning_rate" not in v.path
  ]
  floats = sum(int(np.prod(v.shape)) for v in slots)
  state_bytes = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in slots)
  return params, floats / params, state_bytes / params


def _compiled(name, jit):
  """((model, optimizer), None) for "adam" or a registry cell name, or (None, message) if the
  optimizer refuses the model (printed)."""
  model = make_model()
  optimizer = (
    keras.optimizers.Adam(1e-3)
    if name == "adam"
    else l2l_tf.LearnedOptimizer(registry.make_cell(name, "mnist"))
  )
  model.compile(
    optimizer=optimizer,
    jit_compile=jit,
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
  )
  try:
    optimizer.build(model.trainable_variables)
  except ValueError as e:
    print(f"RESULT optimizer={name} jit={str(jit).lower()} refused={str(e)!r}", flush=True)
    return None, str(e)
  return (model, optimizer), None


def compare(jit):
  """Median batch times of Adam and each learned optimizer, measured in alternating rounds
  so that all see the same machine load (this CPU is shared); returns ({name: timing row}, each
  with its wall and CPU time ratios to Adam's, {name: why the optimizer refused the model})."""
  rng = np.random.default_rng(0)
  per_round = max(10, _STEPS.value // _ROUNDS.value)
  x = rng.random((_BATCH * per_round, 784), dtype=np.float32)
  y = rng.integers(0, 10, _BATCH * per_round)
  runs = {}
  refusals = {}
  for name in ["adam"] + _CELLS.value:
    compiled, refusal = _compiled(name, jit)
    if compiled is None:
      refusals[name] = refusal
      continue
    model, _ = compiled
    model.fit(
      x[: _BATCH * _WARMUP.value],
      y[: _BATCH * _WARMUP.value],
      batch_size=_BATCH,
      epochs=1,
      shuffle=False,
      verbose=0,
    )  # tracing, compilation
    runs[name] = compiled + (_BatchTimer(),)
  for _ in range(_ROUNDS.value):
    for name, (model, _, timer) in runs.items():
      model.fit(x, y, batch_size=_BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
  results = {}
  for name, (model, optimizer, timer) in runs.items():
    step_ms = 1000 * float(np.median(timer.times))
    cpu_ms = 1000 * float(np.median(timer.cpu_times))
    params, floats, state_bytes = state_per_param(model, optimizer)
    print(
      f"RESULT optimizer={name} jit={str(jit).lower()} step_ms={step_ms:.3f} "
      f"cpu_ms={cpu_ms:.3f} batches={len(timer.times)} params={params} "
      f"state_floats_per_param={floats:.1f} state_bytes_per_param={state_bytes:.1f}",
      flush=True,
    )
    results[name] = {
      "step_ms": step_ms,
      "cpu_ms": cpu_ms,
      "batches": len(timer.times),
      "params": params,
      "state_bytes_per_param": state_bytes,
    }
  for row in results.values():
    row["over_adam_step_time"] = row["step_ms"] / results["adam"]["step_ms"]
    row["over_adam_cpu_time"] = row["cpu_ms"] / results["adam"]["cpu_ms"]
  return results, refusals


def main(argv):
  del argv
  unknown = sorted(set(_CELLS.value) - set(registry.CELLS))
  if unknown:
    raise ValueError(f"--cells: unknown {unknown}; choose from {sorted(registry.CELLS)}")
  settings = []
  for jit in _JIT.value:
    if jit.strip().lower() not in ("true", "false"):
      raise ValueError(f"--jit_compile: expected true or false, got {jit!r}")
    settings.append(jit.strip().lower() == "true")
  headline = None
  timings = {}
  for jit in settings:
    rows, refusals = compare(jit)
    timings[str(jit).lower()] = {"optimizers": rows, "refused": refusals}
    for name, row in rows.items():
      if name == "adam":
        continue
      print(
        f"RESULT jit={str(jit).lower()} cell={name} "
        f"over_adam_step_time={row['over_adam_step_time']:.2f} "
        f"over_adam_cpu_time={row['over_adam_cpu_time']:.2f}",
        flush=True,
      )
      if name == "lstm" and headline is None:
        headline = row["over_adam_step_time"], row["over_adam_cpu_time"]
  if headline is not None:
    print(
      f"RESULT learned_over_adam_step_time={headline[0]:.2f} "
      f"learned_over_adam_cpu_time={headline[1]:.2f}"
    )
  if _OUTPUT_JSON.value:
    evaluation.write_json({"batch_size": _BATCH, "jit_compile": timings}, _OUTPUT_JSON.value)
    print(f"wrote {_OUTPUT_JSON.value}")


if __name__ == "__main__":
  cli.run(main)
