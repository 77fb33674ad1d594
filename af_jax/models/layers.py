"""Building blocks shared by the generator and the discriminator (pix2pixHD semantics, NHWC).

Every function here reproduces a PyTorch layer exactly, so that the networks match pix2pixHD layer
for layer and converted weights would map one to one:

- `reflect_pad_conv` is `ReflectionPad2d(k // 2)` + `Conv2d(k)`: same spatial size. Given
  several inputs, both it and `conv` convolve their channel concatenation.
- `conv(..., padding=p)` pads exactly `p` zeros on every side (PyTorch `padding=p`); Flax's 'SAME'
  would pad asymmetrically for even kernels and shift the discriminator's maps.
- `conv_transpose_x2` is `ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1)`.
- `instance_norm` is `InstanceNorm2d(affine=False)` with PyTorch's epsilon 1e-5.
- `avg_pool_3x3_s2` is `AvgPool2d(3, stride=2, padding=1, count_include_pad=False)`.

Convolutions compute in `dtype` (bfloat16 on accelerators) and keep float32 parameters: kernels
N(0, 0.02) as pix2pixHD's `weights_init`, biases zero.
"""


import functools

import jax
import jax.numpy as jnp
import flax.linen as nn

INSTANCE_NORM_EPSILON = 1e-5

conv_kernel_init = nn.initializers.normal(stddev=0.02)


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """Mirror-pads the two spatial axes of an NHWC array by `pad` (edge pixel not repeated)."""
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def _xla_conv(x, kernel, stride: int, padding: int):
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((padding, padding),) * 2,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _taps(x, k: int, stride: int, padding: int):
  """[B, h, w, k * k * C]: each output pixel's k x k input window, ordered (column, row,
  channel): k row shifts, then k column shifts of those (2k slices, not k * k)."""
  x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  h, w = ((n - k) // stride + 1 for n in x.shape[1:3])
  rows = jnp.concatenate([x[:, dy:dy + stride * (h - 1) + 1:stride] for dy in range(k)], -1)
  return jnp.concatenate([rows[:, :, dx:dx + stride * (w - 1) + 1:stride] for dx in range(k)],
                         axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_matmul_kernel_grad(x, kernel, stride: int, padding: int):
  """`_xla_conv`, its kernel gradient taken as one matmul of the input's windows."""
  return _xla_conv(x, kernel, stride, padding)


def _conv_forward(x, kernel, stride, padding):
  return _xla_conv(x, kernel, stride, padding), (x, kernel)


def _conv_backward(stride, padding, residuals, grad):
  x, kernel = residuals
  _, input_grad = jax.vjp(lambda x: _xla_conv(x, kernel, stride, padding), x)
  taps = _taps(x, kernel.shape[0], stride, padding)
  k, _, c_in, features = kernel.shape
  kernel_grad = jnp.einsum("bhwt,bhwo->to", taps, grad).reshape(k, k, c_in, features)
  kernel_grad = kernel_grad.transpose(1, 0, 2, 3)  # (column, row, ...) -> (row, column, ...)
  return input_grad(grad)[0], kernel_grad


_conv_matmul_kernel_grad.defvjp(_conv_forward, _conv_backward)


def convolve(x, kernel, stride: int = 1, padding: int = 0,
             matmul_kernel_grad_on_cpu: bool = False):
  """NHWC `x` convolved with an HWIO `kernel`, `padding` zeros on each side; jittable.

  `matmul_kernel_grad_on_cpu`: on a CPU, the kernel's gradient is one matmul of the input's
  windows and the output's gradient (the same sums); other devices keep XLA's. XLA's CPU
  backend takes the kernel gradient of the discriminator's stride-1 4x4 convs (64 -> 128
  channels on a 5-9 px map) as a convolution whose window is the whole map, 10x slower than
  the matmul (batch 4, 64 px: 21.0 against 2.1 ms): it was a third of the demo's training step.
  """
  if not matmul_kernel_grad_on_cpu:
    return _xla_conv(x, kernel, stride, padding)
  return jax.lax.platform_dependent(
      x, kernel, cpu=lambda x, k: _conv_matmul_kernel_grad(x, k, stride, padding),
      default=lambda x, k: _xla_conv(x, k, stride, padding))


class Conv(nn.Module):
  """A square convolution with exactly `padding` zeros on each side (PyTorch `padding=p`) of
  the channel concatenation of its inputs, with `nn.Conv`'s parameters: `kernel` (k, k, total
  input channels, features), N(0, 0.02), and `bias`, zero. `reflect` pads by mirroring instead
  (`ReflectionPad2d(k // 2)` first; size preserving at stride 1).

  Several inputs are not concatenated: each is convolved with its slice of the kernel and the
  results summed (the same sum, in another order). On a CPU XLA convolved the generator's last
  layer (16 features + a 1-4 channel guide, 7x7) 4-5x slower as one 17-20 channel input than as
  a 16 and a 4 channel one (batch 2, 64 px: 6.0 against 1.2 ms forward, 7.8 against 2.2 ms
  backward). `matmul_kernel_grad_on_cpu`: see `convolve`.
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  reflect: bool = False
  matmul_kernel_grad_on_cpu: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, *inputs: jax.Array) -> jax.Array:
    k = self.kernel_size
    channels = [x.shape[-1] for x in inputs]
    kernel = self.param("kernel", conv_kernel_init, (k, k, sum(channels), self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    starts = [sum(channels[:i]) for i in range(len(inputs))]
    padding = 0 if self.reflect else self.padding
    prepare = (lambda x: reflect_pad(x, k // 2)) if self.reflect else (lambda x: x)
    y = sum(convolve(prepare(x.astype(self.dtype)), kernel[:, :, s:s + c].astype(self.dtype),
                     self.stride, padding, self.matmul_kernel_grad_on_cpu)
            for x, s, c in zip(inputs, starts, channels))
    return y + bias.astype(self.dtype)


def conv(features: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
         matmul_kernel_grad_on_cpu: bool = False, dtype=jnp.float32,
         name: str | None = None) -> Conv:
  """`Conv`: PyTorch `Conv2d(k, stride, padding)` of its inputs' channels."""
  return Conv(features, kernel_size, stride=stride, padding=padding,
              matmul_kernel_grad_on_cpu=matmul_kernel_grad_on_cpu, dtype=dtype, name=name)


def reflect_pad_conv(features: int, kernel_size: int, *, dtype=jnp.float32,
                     name: str | None = None) -> Conv:
  """`Conv`: PyTorch `ReflectionPad2d(k // 2)` + `Conv2d(k)` of its inputs' channels.

  Call it inside a compact method; the conv is created (and named) at that point.
  """
  return Conv(features, kernel_size, reflect=True, dtype=dtype, name=name)


# Sub-pixel form of the x2 transposed conv: output row 2m takes input row m through kernel row 1;
# row 2m + 1 takes rows m and m + 1 through kernel rows 2 and 0 (PyTorch's scatter, p = 1). The
# same holds for columns. (output phase, input offset) -> kernel index; absent pairs are zero.
_SUBPIXEL_TAPS = {(0, 0): 1, (1, 0): 2, (1, 1): 0}


class ConvTransposeX2(nn.Module):
  """The x2 upsampling of pix2pixHD: PyTorch `ConvTranspose2d(k=3, s=2, p=1, output_padding=1)`.

  Parameters as Flax's `nn.ConvTranspose(transpose_kernel=True)` stores them: `kernel`
  (kh, kw, out, in), where a PyTorch weight (in, out, kh, kw) maps by `transpose(2, 3, 1, 0)`,
  and `bias` (out,). Computed in sub-pixel form: one 2x2 convolution of the input (padded by one
  zero row and column at the end) to the four output phases' channels, then depth-to-space.
  That is exactly the transposed conv, without the zero-dilated input XLA would otherwise
  convolve: 3x faster forward and backward on a CPU.
  """
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c_in = x.shape[-1]
    kernel = self.param("kernel", conv_kernel_init, (3, 3, self.features, c_in))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    k = jnp.transpose(kernel, (0, 1, 3, 2)).astype(self.dtype)  # (kh, kw, in, out)
    zero = jnp.zeros((c_in, self.features), self.dtype)
    def tap(phase_h, dh, phase_w, dw):
      kh, kw = _SUBPIXEL_TAPS.get((phase_h, dh)), _SUBPIXEL_TAPS.get((phase_w, dw))
      return zero if kh is None or kw is None else k[kh, kw]
    # w[dh, dw, in, (phase_h, phase_w, out)]
    w = jnp.stack([jnp.stack([jnp.stack([tap(a, dh, b, dw) for a in (0, 1) for b in (0, 1)], 1)
                              for dw in (0, 1)]) for dh in (0, 1)])
    w = w.reshape(2, 2, c_in, 4 * self.features)
    x = jnp.pad(x.astype(self.dtype), ((0, 0), (0, 1), (0, 1), (0, 0)))
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    b, h, w_, _ = y.shape
    y = y.reshape(b, h, w_, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, 2 * h, 2 * w_, self.features) + bias.astype(self.dtype)


def conv_transpose_x2(features: int, *, dtype=jnp.float32, name: str | None = None
                      ) -> ConvTransposeX2:
  """`ConvTransposeX2`: PyTorch `ConvTranspose2d(k=3, s=2, p=1, output_padding=1)`."""
  return ConvTransposeX2(features, dtype=dtype, name=name)


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
