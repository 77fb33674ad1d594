"""Building blocks shared by the generator and the discriminator (pix2pixHD semantics, NHWC).

Every function here reproduces a PyTorch layer exactly, so that the networks match pix2pixHD layer
for layer and converted weights would map one to one:

- `reflect_pad_conv` is `ReflectionPad2d(k // 2)` + `Conv2d(k)`: same spatial size.
- `conv(..., padding=p)` pads exactly `p` zeros on every side (PyTorch `padding=p`); Flax's 'SAME'
  would pad asymmetrically for even kernels and shift the discriminator's maps.
- `conv_transpose_x2` is `ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1)`.
- `instance_norm` is `InstanceNorm2d(affine=False)` with PyTorch's epsilon 1e-5.
- `avg_pool_3x3_s2` is `AvgPool2d(3, stride=2, padding=1, count_include_pad=False)`.

Convolutions compute in `dtype` (bfloat16 on accelerators) and keep float32 parameters: kernels
N(0, 0.02) as pix2pixHD's `weights_init`, biases zero.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import flax.linen as nn

INSTANCE_NORM_EPSILON = 1e-5

conv_kernel_init = nn.initializers.normal(stddev=0.02)


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """Mirror-pads the two spatial axes of an NHWC array by `pad` (edge pixel not repeated)."""
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def conv(features: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
         dtype=jnp.float32, name: str | None = None) -> nn.Conv:
  """A square convolution with exactly `padding` zeros on each side, bias, N(0, 0.02) init."""
  return nn.Conv(features, (kernel_size, kernel_size), strides=(stride, stride),
                 padding=((padding, padding), (padding, padding)), dtype=dtype,
                 kernel_init=conv_kernel_init, name=name)


def reflect_pad_conv(features: int, kernel_size: int, *, dtype=jnp.float32,
                     name: str | None = None) -> Callable[[jax.Array], jax.Array]:
  """A stride-1 `conv` applied after reflect-padding by `kernel_size // 2` (size preserving).

  Call it inside a compact method; the conv is created (and named) at that point.
  """
  layer = conv(features, kernel_size, dtype=dtype, name=name)
  return lambda x: layer(reflect_pad(x, kernel_size // 2))


def conv_transpose_x2(features: int, *, dtype=jnp.float32, name: str | None = None
                      ) -> nn.ConvTranspose:
  """The x2 upsampling of pix2pixHD: PyTorch `ConvTranspose2d(k=3, s=2, p=1, output_padding=1)`.

  lax pads the stride-dilated input by (k - 1 - p, k - 1 - p + output_padding) = (1, 2) and
  correlates with the flipped kernel, which is the PyTorch scatter definition; 'SAME' gives the
  same shape but shifts the result by one pixel. The kernel is stored (kh, kw, out, in); a PyTorch
  weight (in, out, kh, kw) maps to it by `transpose(2, 3, 1, 0)`.
  """
  return nn.ConvTranspose(features, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                          transpose_kernel=True, dtype=dtype, kernel_init=conv_kernel_init,
                          name=name)


def instance_norm(x: jax.Array) -> jax.Array:
  """Normalises each sample and channel over H and W; no learned scale or bias.

  Statistics are taken in float32 even for bfloat16 inputs; the result comes back in the input
  dtype. Mean and variance come from one pass over the data (the sum and the sum of squares fuse
  into one reduction, saving a read of every activation); the values are first shifted by one
  pixel of the same channel so that E[d^2] - E[d]^2 does not cancel catastrophically when the
  mean is large against the spread. The shift cancels exactly, so it carries no gradient.
  """
  x32 = x.astype(jnp.float32)
  d = x32 - jax.lax.stop_gradient(x32[:, :1, :1, :])
  mean = jnp.mean(d, axis=(1, 2), keepdims=True)
  var = jnp.maximum(jnp.mean(jnp.square(d), axis=(1, 2), keepdims=True) - jnp.square(mean), 0.0)
  return ((d - mean) * jax.lax.rsqrt(var + INSTANCE_NORM_EPSILON)).astype(x.dtype)


def avg_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """3x3 average pool, stride 2, padding 1, padded pixels excluded from the mean (pix2pixHD)."""
  return nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                     count_include_pad=False)
