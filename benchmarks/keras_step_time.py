"""model.fit step time with LearnedOptimizer vs keras Adam on the MNIST MLP, and state memory.

The MNIST MLP of the paper (784-20-10, sigmoid; 15,910 parameters), minibatch 128, synthetic
data (the timing does not depend on the pixels). The learned optimizer is the paper's
CoordinatewiseLSTM (2 x 20 units, log_sign preprocessing), randomly initialised: its cost does
not depend on its weights. Times are medians of per-batch wall times inside model.fit (a
Keras callback), after warm-up batches that include tracing; the two optimizers are timed in
alternating rounds so that both see the same load on a shared machine.

    python benchmarks/keras_step_time.py [--steps=200] [--rounds=10] [--jit_compile=false,true]

Prints one line per (optimizer, jit) and the headline ratio:
    RESULT optimizer=adam jit=false step_ms=... state_floats_per_param=2.0 state_bytes_per_param=8.0
    RESULT learned_over_adam_step_time=...      (first --jit_compile setting)
"""
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import time  # pylint: disable=g-import-not-at-top,wrong-import-position

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import keras  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

import l2l_tf  # pylint: disable=g-import-not-at-top,wrong-import-position

_STEPS = flags.DEFINE_integer("steps", 200, "Timed batches per optimizer.", lower_bound=10)
_ROUNDS = flags.DEFINE_integer("rounds", 10, "Alternating timing rounds (Adam, learned, ...).",
                               lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", 20, "Untimed batches (tracing) first.", lower_bound=2)
_JIT = flags.DEFINE_list("jit_compile", ["false"], "model.fit jit_compile settings to time.")
_BATCH = 128


class _BatchTimer(keras.callbacks.Callback):

  def __init__(self):
    super().__init__()
    self.times = []

  def on_train_batch_begin(self, batch, logs=None):
    self._start = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    self.times.append(time.perf_counter() - self._start)


def make_model():
  keras.utils.set_random_seed(0)
  return keras.Sequential([keras.Input((784,)), keras.layers.Dense(20, activation="sigmoid"),
                           keras.layers.Dense(10)])


def state_per_param(model, optimizer):
  params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  slots = [v for v in optimizer.variables
           if v is not optimizer.iterations and "learning_rate" not in v.path]
  floats = sum(int(np.prod(v.shape)) for v in slots)
  state_bytes = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in slots)
  return params, floats / params, state_bytes / params


def compare(jit):
  """Median batch times of Adam and LearnedOptimizer, measured in alternating rounds so that
  both see the same machine load (this CPU is shared)."""
  rng = np.random.default_rng(0)
  per_round = max(10, _STEPS.value // _ROUNDS.value)
  x = rng.random((_BATCH * per_round, 784), dtype=np.float32)
  y = rng.integers(0, 10, _BATCH * per_round)
  runs = {}
  for name in ("adam", "learned"):
    model = make_model()
    optimizer = (keras.optimizers.Adam(1e-3) if name == "adam"
                 else l2l_tf.LearnedOptimizer(l2l_tf.CoordinatewiseLSTM()))
    model.compile(optimizer=optimizer, jit_compile=jit,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    warm = _BatchTimer()
    model.fit(x[:_BATCH * _WARMUP.value], y[:_BATCH * _WARMUP.value], batch_size=_BATCH,
              epochs=1, shuffle=False, verbose=0, callbacks=[warm])  # tracing, compilation
    runs[name] = (model, optimizer, _BatchTimer())
  for _ in range(_ROUNDS.value):
    for name, (model, _, timer) in runs.items():
      model.fit(x, y, batch_size=_BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
  results = {}
  for name, (model, optimizer, timer) in runs.items():
    step_ms = 1000 * float(np.median(timer.times))
    params, floats, state_bytes = state_per_param(model, optimizer)
    print(f"RESULT optimizer={name} jit={str(jit).lower()} step_ms={step_ms:.3f} "
          f"batches={len(timer.times)} params={params} state_floats_per_param={floats:.1f} "
          f"state_bytes_per_param={state_bytes:.1f}", flush=True)
    results[name] = step_ms
  return results["learned"] / results["adam"]


def main(argv):
  del argv
  ratios = []
  for jit in _JIT.value:
    jit = {"true": True, "false": False}[jit.strip().lower()]
    ratio = compare(jit)
    ratios.append(ratio)
    print(f"RESULT jit={str(jit).lower()} learned_over_adam_step_time={ratio:.2f}", flush=True)
  print(f"RESULT learned_over_adam_step_time={ratios[0]:.2f}")


if __name__ == "__main__":
  app.run(main)
