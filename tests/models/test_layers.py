"""PyTorch-exact layers checked against direct numpy implementations of the PyTorch definitions."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from af_jax.models import layers


def _reflect_index(i: int, n: int) -> int:
  """Index into a length-n axis for padded position i (mirror without repeating the edge)."""
  i = abs(i)
  return 2 * (n - 1) - i if i >= n else i


def _torch_conv2d(x, w, b, stride, padding):
  """PyTorch Conv2d on NHWC x with an OIHW weight: zero padding, cross-correlation."""
  x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  k = w.shape[-1]
  h_out = (x.shape[1] - k) // stride + 1
  w_out = (x.shape[2] - k) // stride + 1
  y = np.zeros((x.shape[0], h_out, w_out, w.shape[0]))
  for i in range(h_out):
    for j in range(w_out):
      patch = x[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
      y[:, i, j, :] = np.einsum("bhwc,ochw->bo", patch, w)
  return y + b


def _torch_conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1):
  """PyTorch ConvTranspose2d (weight [in, out, kh, kw]) in its scatter form, NHWC."""
  batch, h, wd, _ = x.shape
  k = w.shape[-1]
  h_out = (h - 1) * stride - 2 * padding + k + output_padding
  w_out = (wd - 1) * stride - 2 * padding + k + output_padding
  full = np.zeros((batch, (h - 1) * stride + k + output_padding,
                   (wd - 1) * stride + k + output_padding, w.shape[1]))
  for i in range(h):
    for j in range(wd):
      full[:, i * stride:i * stride + k, j * stride:j * stride + k, :] += np.einsum(
          "bc,cohw->bhwo", x[:, i, j, :], w)
  return full[:, padding:padding + h_out, padding:padding + w_out, :] + b


def test_reflect_pad_mirrors_without_repeating_the_edge():
  x = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)
  got = np.asarray(layers.reflect_pad(jnp.asarray(x), 3))
  want = np.empty((2, 10, 11, 3), np.float32)
  for i in range(10):
    for j in range(11):
      want[:, i, j] = x[:, _reflect_index(i - 3, 4), _reflect_index(j - 3, 5)]
  np.testing.assert_array_equal(got, want)
  row = np.asarray(layers.reflect_pad(jnp.arange(1.0, 5.0).reshape(1, 1, 4, 1), 2))
  np.testing.assert_array_equal(row[0, 2, :, 0], [3, 2, 1, 2, 3, 4, 3, 2])


def test_instance_norm_matches_pytorch_with_epsilon_1e5():
  rng = np.random.default_rng(0)
  # A channel with variance 1e-5: epsilon 1e-5 vs Flax's 1e-6 changes the result by ~40%.
  x = rng.normal(size=(2, 6, 7, 3)) * np.array([1.0, 10.0, np.sqrt(1e-5)]) + 5.0
  mean = x.mean(axis=(1, 2), keepdims=True)
  var = x.var(axis=(1, 2), keepdims=True)
  want = (x - mean) / np.sqrt(var + 1e-5)
  got = layers.instance_norm(jnp.asarray(x, jnp.float32))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-3, rtol=2e-3)


def test_instance_norm_keeps_bfloat16_and_float32_statistics():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 64, 64, 4)) * 3.0 + 20.0, jnp.bfloat16)
  got = layers.instance_norm(x)
  assert got.dtype == jnp.bfloat16
  x64 = np.asarray(x, np.float64)
  mean = x64.mean(axis=(1, 2), keepdims=True)
  want = (x64 - mean) / np.sqrt(x64.var(axis=(1, 2), keepdims=True) + 1e-5)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=0.05)
  per_channel_mean = np.asarray(got, np.float64).mean(axis=(1, 2))
  np.testing.assert_allclose(per_channel_mean, 0.0, atol=0.01)


def test_instance_norm_gradient_matches_the_two_pass_definition():
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(2, 5, 6, 3)) * 2.0 + 3.0, jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=x.shape), jnp.float32)

  def two_pass(v):
    mean = v.mean(axis=(1, 2), keepdims=True)
    return (v - mean) / jnp.sqrt(((v - mean) ** 2).mean(axis=(1, 2), keepdims=True) + 1e-5)

  got = jax.grad(lambda v: jnp.sum(layers.instance_norm(v) * cotangent))(x)
  want = jax.grad(lambda v: jnp.sum(two_pass(v) * cotangent))(x)
  np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("size", [(4, 4), (3, 5)])
def test_conv_transpose_x2_equals_pytorch_conv_transpose2d(size):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, *size, 5)).astype(np.float32)
  w_torch = rng.normal(size=(5, 3, 3, 3)).astype(np.float32)  # [in, out, kh, kw]
  b = rng.normal(size=(3,)).astype(np.float32)
  module = layers.conv_transpose_x2(3)
  params = {"params": {"kernel": w_torch.transpose(2, 3, 1, 0), "bias": b}}
  got = np.asarray(module.apply(params, jnp.asarray(x)))
  want = _torch_conv_transpose2d(x.astype(np.float64), w_torch, b)
  assert got.shape == (2, 2 * size[0], 2 * size[1], 3)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_conv_with_explicit_padding_equals_pytorch_conv2d():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(1, 9, 8, 3)).astype(np.float32)
  w_torch = rng.normal(size=(4, 3, 4, 4)).astype(np.float32)  # OIHW
  b = rng.normal(size=(4,)).astype(np.float32)
  module = layers.conv(4, 4, stride=2, padding=2)
  params = {"params": {"kernel": w_torch.transpose(2, 3, 1, 0), "bias": b}}
  got = np.asarray(module.apply(params, jnp.asarray(x)))
  want = _torch_conv2d(x.astype(np.float64), w_torch, b, stride=2, padding=2)
  assert got.shape == (1, 5, 5, 4)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_matmul_kernel_gradient_on_cpu_equals_xla_gradients(stride):
  # The discriminator's stride-1 layers take this path on a CPU (`layers.convolve`).
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.normal(size=(2, 7, 6, 5)).astype(np.float32))
  w_torch = rng.normal(size=(3, 5, 4, 4)).astype(np.float32)  # OIHW
  b = rng.normal(size=(3,)).astype(np.float32)
  params = {"params": {"kernel": jnp.asarray(w_torch.transpose(2, 3, 1, 0)), "bias": b}}
  matmul = layers.conv(3, 4, stride=stride, padding=2, matmul_kernel_grad_on_cpu=True)
  xla = layers.conv(3, 4, stride=stride, padding=2)
  want = _torch_conv2d(np.asarray(x, np.float64), w_torch, b, stride=stride, padding=2)
  np.testing.assert_allclose(np.asarray(matmul.apply(params, x)), want, atol=1e-4, rtol=1e-4)

  def grads(module):
    return jax.grad(lambda p, x: jnp.sum(jnp.sin(module.apply(p, x))), argnums=(0, 1))(params, x)
  for got, expected in zip(jax.tree.leaves(grads(matmul)), jax.tree.leaves(grads(xla))):
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-4, rtol=1e-4)


class _TwoInputConv(nn.Module):
  @nn.compact
  def __call__(self, features, guide):
    return layers.reflect_pad_conv(2, 7, name="conv")(features, guide)


def test_conv_of_several_inputs_equals_the_conv_of_their_concatenation():
  # The generator's last layers take the guide this way (`layers.Conv`): same parameters.
  rng = np.random.default_rng(8)
  features = jnp.asarray(rng.normal(size=(1, 9, 8, 16)).astype(np.float32))
  guide = jnp.asarray(rng.normal(size=(1, 9, 8, 4)).astype(np.float32))
  params = _TwoInputConv().init(jax.random.key(0), features, guide)
  assert params["params"]["conv"]["kernel"].shape == (7, 7, 20, 2)
  whole = _ReflectPadConv(features=2).apply(params, jnp.concatenate([features, guide], axis=-1))
  np.testing.assert_allclose(np.asarray(_TwoInputConv().apply(params, features, guide)),
                             np.asarray(whole), atol=1e-5, rtol=1e-5)


class _ReflectPadConv(nn.Module):
  features: int = 4

  @nn.compact
  def __call__(self, x):
    return layers.reflect_pad_conv(self.features, 7, name="conv")(x)


def test_reflect_pad_conv_equals_reflection_pad2d_then_conv2d():
  rng = np.random.default_rng(6)
  x = rng.normal(size=(1, 8, 9, 3)).astype(np.float32)
  w_torch = rng.normal(size=(4, 3, 7, 7)).astype(np.float32)  # OIHW
  b = rng.normal(size=(4,)).astype(np.float32)
  params = {"params": {"conv": {"kernel": w_torch.transpose(2, 3, 1, 0), "bias": b}}}
  got = np.asarray(_ReflectPadConv().apply(params, jnp.asarray(x)))
  padded = np.pad(x.astype(np.float64), ((0, 0), (3, 3), (3, 3), (0, 0)), mode="reflect")
  want = _torch_conv2d(padded, w_torch, b, stride=1, padding=0)
  assert got.shape == (1, 8, 9, 4)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_avg_pool_excludes_padding_from_the_count(size):
  rng = np.random.default_rng(4)
  x = rng.normal(size=(2, *size, 3)).astype(np.float32)
  h, w = size
  h_out, w_out = (h - 1) // 2 + 1, (w - 1) // 2 + 1
  want = np.zeros((2, h_out, w_out, 3))
  for i in range(h_out):
    for j in range(w_out):
      rows = range(max(2 * i - 1, 0), min(2 * i + 2, h))
      cols = range(max(2 * j - 1, 0), min(2 * j + 2, w))
      window = x[:, rows.start:rows.stop, cols.start:cols.stop, :]
      want[:, i, j] = window.sum(axis=(1, 2)) / (len(rows) * len(cols))
  got = np.asarray(layers.avg_pool_3x3_s2(jnp.asarray(x)))
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_conv_init_is_normal_002_with_zero_bias():
  for module in (layers.conv(64, 3), layers.conv_transpose_x2(64)):
    params = module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 64)))["params"]
    kernel = np.asarray(params["kernel"])
    assert abs(kernel.std() - 0.02) < 0.001 and abs(kernel.mean()) < 0.001
    np.testing.assert_array_equal(np.asarray(params["bias"]), 0.0)
