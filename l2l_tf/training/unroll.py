"""Unrolling optimizee training: the forward pass of the meta-loss.

A trajectory's carried state is a Trajectory: parameters theta_t, the optimizer's state, and the
loss and gradient at theta_t (computed once per step: the gradient feeds the optimizer, the loss
feeds the meta-loss). An unroll of K steps turns theta_t into theta_{t+K} and returns
sum_{k=1..K} mean_b f_b(theta_{t+k}), the paper's meta-loss with w_t = 1.
"""
import collections

import tensorflow as tf

Trajectory = collections.namedtuple("Trajectory", ["params", "rule_state", "loss", "grads"])


def value_and_grad(problem, params, batch, second_derivatives=False):
  """Per-instance losses [B] and their gradients at params, on one step's batch.

  With second_derivatives False the gradient is a constant for the meta-gradient (the paper's
  dropped edges), and the loss's own derivative is supplied from that same gradient, so the
  backward pass never differentiates the optimizee a second time.
  """
  with tf.GradientTape() as tape:
    tape.watch(params)
    losses = problem.loss(params, batch)
    total = tf.reduce_sum(losses)
  grads = tape.gradient(total, params)
  if second_derivatives:
    return losses, grads
  grads = tf.nest.map_structure(tf.stop_gradient, grads)
  return _with_known_gradient(params, tf.stop_gradient(losses), grads), grads


def _with_known_gradient(params, losses, grads):
  """Returns `losses` whose derivative w.r.t. params is the precomputed `grads`."""
  names = list(params)

  @tf.custom_gradient
  def attach(*values):
    del values

    def gradient(upstream):
      # d(sum_b w_b f_b)/d theta_b = w_b * grad_b, for the per-instance loss weights w.
      return [tf.reshape(upstream, [-1] + [1] * (grads[n].shape.rank - 1)) * grads[n]
              for n in names]

    return tf.identity(losses), gradient

  return attach(*[params[n] for n in names])


def start_trajectory(problem, rule, params, first_batch, second_derivatives=False):
  """Trajectory at theta_0 with a fresh optimizer state (zero hidden state)."""
  losses, grads = value_and_grad(problem, params, first_batch, second_derivatives)
  return Trajectory(params, rule.init_state(params), losses, grads)


def unroll(problem, rule, trajectory, batches, second_derivatives=False):
  """Runs len(batches) optimizer steps from `trajectory`.

  Args:
    batches: nested tensors with a leading axis of K: the data of steps t+1 .. t+K.
  Returns:
    (meta_loss, trajectory at t+K, losses [K, B] after each step).
  A tf.while_loop, so graphs (and XLA compiles) stay the same size for any K.
  """
  leading = tf.nest.flatten(batches)[0]
  static_steps = leading.shape[0]  # known statically: XLA needs a bounded loop
  num_steps = tf.shape(leading)[0]
  losses = tf.TensorArray(trajectory.loss.dtype, size=num_steps, element_shape=trajectory.loss.shape)

  def body(t, trajectory, losses, meta_loss):
    params, rule_state = rule.step(trajectory.params, trajectory.grads, trajectory.rule_state)
    batch = tf.nest.map_structure(lambda x: x[t], batches)
    step_losses, grads = value_and_grad(problem, params, batch, second_derivatives)
    return (t + 1, Trajectory(params, rule_state, step_losses, grads),
            losses.write(t, step_losses), meta_loss + tf.reduce_mean(step_losses))

  _, trajectory, losses, meta_loss = tf.while_loop(
      lambda t, *_: t < num_steps, body,
      (tf.constant(0), trajectory, losses, tf.zeros([], trajectory.loss.dtype)),
      maximum_iterations=static_steps)
  return meta_loss, trajectory, losses.stack()


def detach(trajectory):
  """Carries a trajectory into the next truncation without meta-gradient history."""
  return tf.nest.map_structure(tf.stop_gradient, trajectory)
