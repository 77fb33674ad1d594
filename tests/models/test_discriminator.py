"""Multiscale discriminator: parameter count, map sizes, scale order, norm placement, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np

from af_jax.models.discriminator import MultiscaleDiscriminator
from af_jax.models import layers

TINY = dict(ndf=8, n_layers=3)


def _random_params(model, shape, scale=0.02, seed=0):
  """N(0, scale) params from the abstract init (skips the slow threefry compile of `init`)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, scale, s.shape), s.dtype), shapes)


def _leaky_relu_inverse(y):
  return np.where(y >= 0, y, y / 0.2)


def test_paper_config_parameters_names_and_map_sizes_at_256():
  model = MultiscaleDiscriminator()
  x = jax.ShapeDtypeStruct((2, 256, 256, 7), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables)) == 5_537_666
  assert set(variables["params"]) == {f"scale{s}_layer{j}" for s in range(2) for j in range(5)}
  assert variables["params"]["scale0_layer0"]["kernel"].shape == (4, 4, 7, 64)
  assert variables["params"]["scale1_layer3"]["kernel"].shape == (4, 4, 256, 512)
  outputs = jax.eval_shape(model.apply, variables, x)
  assert [[o.shape[1:] for o in scale] for scale in outputs] == [
      [(129, 129, 64), (65, 65, 128), (33, 33, 256), (34, 34, 512), (35, 35, 1)],
      [(65, 65, 64), (33, 33, 128), (17, 17, 256), (18, 18, 512), (19, 19, 1)]]
  assert all(o.dtype == jnp.float32 for scale in outputs for o in scale)


def test_full_resolution_goes_to_the_last_named_scale_and_the_next_sees_the_pooled_input():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.uniform(-1, 1, size=(2, 32, 32, 7)), jnp.float32)
  two = MultiscaleDiscriminator(**TINY, num_scales=2)
  params = _random_params(two, x.shape)["params"]
  outputs = jax.jit(two.apply)({"params": params}, x)

  one = jax.jit(MultiscaleDiscriminator(**TINY, num_scales=1).apply)
  as_scale0 = lambda prefix: {k.replace(prefix, "scale0"): v for k, v in params.items()
                              if k.startswith(prefix)}
  full = one({"params": as_scale0("scale1")}, x)[0]
  pooled = one({"params": as_scale0("scale0")}, layers.avg_pool_3x3_s2(x))[0]
  for got, want in zip(outputs[0] + outputs[1], full + pooled, strict=True):
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_instance_norm_on_all_but_the_first_and_last_layer():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.uniform(0, 1, size=(2, 64, 64, 7)), jnp.float32)
  model = MultiscaleDiscriminator(**TINY, num_scales=1)
  # Unit weights make the pre-norm variance dwarf the epsilon, so IN outputs have variance ~1.
  outputs = jax.jit(model.apply)(_random_params(model, x.shape, scale=1.0), x)[0]
  assert outputs[-1].shape == (2, 11, 11, 1)
  for j, out in enumerate(outputs[:-1]):
    pre_activation = _leaky_relu_inverse(np.asarray(out, np.float64))
    channel_means = pre_activation.mean(axis=(1, 2))
    if j == 0:  # plain conv + bias: the per-channel means are far from zero
      assert np.abs(channel_means).max() > 1e-2
    else:
      np.testing.assert_allclose(channel_means, 0.0, atol=1e-4)
      np.testing.assert_allclose(pre_activation.var(axis=(1, 2)), 1.0, atol=1e-2)
    assert out.min() < 0  # leaky: negatives survive, scaled by 0.2
  assert np.abs(np.asarray(outputs[-1]).mean(axis=(1, 2))).max() > 1e-3


def test_bfloat16_compute_returns_float32_outputs_close_to_float32():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.uniform(-1, 1, size=(1, 32, 32, 7)), jnp.float32)
  params = _random_params(MultiscaleDiscriminator(**TINY), x.shape)
  low = jax.jit(MultiscaleDiscriminator(**TINY, dtype=jnp.bfloat16).apply)(params, x)
  high = jax.jit(MultiscaleDiscriminator(**TINY).apply)(params, x)
  for got, want in zip(jax.tree.leaves(low), jax.tree.leaves(high), strict=True):
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, atol=0.08)
