"""The Inception Score network: torch-fidelity's `inception-v3-compat`, in Flax (NHWC).

torch-fidelity ports the TF "inception-2015-12-05" graph that IS and FID numbers in the
literature come from, not torchvision's Inception-v3 (which differs in its pooling branches
and its 1000-way head). This module follows that port layer by layer, so its published
weights (`weights-inception-2015-12-05-6726825d.pth`) load unchanged:

* input: uint8 RGB of any size, resized to 299 x 299 with TF1's bilinear resize
  (`align_corners=False`, which in TF1 samples at `dst * in / out`, without half-pixel
  centres), then mapped to (x - 128) / 128;
* stem: 3x3/2 conv, 3x3 conv, 3x3 conv (padding 1), 3x3/2 max pool, 1x1 conv, 3x3 conv,
  3x3/2 max pool; every conv is bias-free, followed by batch norm (eps 1e-3) and ReLU;
* Mixed_5b..5d (A blocks), 6a (B), 6b..6e (C), 7a (D), 7b and 7c (E). TF's graph averages
  without counting padded zeros (`count_include_pad=False`) in the A, C and first E block,
  and max-pools (3x3, stride 1, padding 1) in the pool branch of the last E block;
* global average pool -> `pool` [N, 2048]; `logits_unbiased` = pool @ fc.weight^T [N, 1008]
  (the 1008-way fc without its bias, the feature torch-fidelity computes IS from).

`load_inception_variables(state)` maps torch-fidelity's state-dict keys (`Mixed_6b.branch7x7_2
.conv.weight`, `....bn.running_var`, `fc.weight`) onto this module's variables; Flax names
mirror the torch names, so the mapping is mechanical.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from af_jax.models import torch_weights

INPUT_SIZE = 299
POOL_FEATURES = 2048
NUM_LOGITS = 1008
BATCH_NORM_EPSILON = 1e-3
# Full float32 convolutions on accelerators too (XLA would otherwise use TF32 on GPUs), so the
# features match the float32 reference.
PRECISION = jax.lax.Precision.HIGHEST


def _tf1_resize_axis(in_size: int, out_size: int):
  """Source indices and weights of TF1's `align_corners=False` bilinear resize along one axis.

  Computed in float32 exactly as torch-fidelity computes them (`arange * float32(in / out)`),
  so the resized image matches bit for bit on CPU.
  """
  source = np.arange(out_size, dtype=np.float32) * np.float32(in_size / out_size)
  low = source.astype(np.int32)
  high = np.minimum(low + 1, in_size - 1)
  return low, high, source - low.astype(np.float32)


def resize_like_tf1(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """Bilinear resize of float [N, H, W, C] to [N, size, size, C], as TF1 / torch-fidelity do.

  Interpolates along the width first, then the height, in torch-fidelity's operation order.
  """
  y_low, y_high, dy = _tf1_resize_axis(images.shape[1], size)
  x_low, x_high, dx = _tf1_resize_axis(images.shape[2], size)
  rows_low, rows_high = images[:, y_low], images[:, y_high]
  dx = jnp.asarray(dx)[None, None, :, None]
  top = rows_low[:, :, x_low] + (rows_low[:, :, x_high] - rows_low[:, :, x_low]) * dx
  bottom = rows_high[:, :, x_low] + (rows_high[:, :, x_high] - rows_high[:, :, x_low]) * dx
  return top + (bottom - top) * jnp.asarray(dy)[None, :, None, None]


class BasicConv2d(nn.Module):
  """Bias-free conv, inference batch norm (eps 1e-3), ReLU."""
  features: int
  kernel: tuple[int, int]
  stride: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    (ph, pw), s = self.padding, self.stride
    x = nn.Conv(self.features, self.kernel, strides=(s, s), padding=((ph, ph), (pw, pw)),
                use_bias=False, precision=PRECISION, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BATCH_NORM_EPSILON, name="bn")(x)
    return nn.relu(x)


def _conv(features, kernel, stride=1, padding=(0, 0), *, name):
  kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
  return BasicConv2d(features, kernel, stride, padding, name=name)


def _avg_pool_3x3(x):
  """TF's 3x3 stride-1 'SAME' average: padded zeros are not counted."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3_stride_2(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = _conv(64, 1, name="branch1x1")(x)
    b5 = _conv(48, 1, name="branch5x5_1")(x)
    b5 = _conv(64, 5, padding=(2, 2), name="branch5x5_2")(b5)
    b3 = _conv(64, 1, name="branch3x3dbl_1")(x)
    b3 = _conv(96, 3, padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = _conv(96, 3, padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = _conv(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = _conv(384, 3, stride=2, name="branch3x3")(x)
    bd = _conv(64, 1, name="branch3x3dbl_1")(x)
    bd = _conv(96, 3, padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = _conv(96, 3, stride=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_stride_2(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    b1 = _conv(192, 1, name="branch1x1")(x)
    b7 = _conv(c, 1, name="branch7x7_1")(x)
    b7 = _conv(c, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = _conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = _conv(c, 1, name="branch7x7dbl_1")(x)
    bd = _conv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = _conv(c, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = _conv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = _conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = _conv(192, 1, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = _conv(192, 1, name="branch3x3_1")(x)
    b3 = _conv(320, 3, stride=2, name="branch3x3_2")(b3)
    b7 = _conv(192, 1, name="branch7x7x3_1")(x)
    b7 = _conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = _conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = _conv(192, 3, stride=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_stride_2(x)], axis=-1)


class InceptionE(nn.Module):
  """The two E blocks differ only in their pool branch (see the module docstring)."""
  pool: str  # "avg" (Mixed_7b) or "max" (Mixed_7c)

  @nn.compact
  def __call__(self, x):
    b1 = _conv(320, 1, name="branch1x1")(x)
    b3 = _conv(384, 1, name="branch3x3_1")(x)
    b3 = jnp.concatenate([_conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          _conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], -1)
    bd = _conv(448, 1, name="branch3x3dbl_1")(x)
    bd = _conv(384, 3, padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([_conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          _conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], -1)
    if self.pool == "avg":
      pooled = _avg_pool_3x3(x)
    else:
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    bp = _conv(192, 1, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3Compat(nn.Module):
  """uint8 RGB [N, H, W, 3] -> {'pool': [N, 2048], 'logits_unbiased': [N, 1008]} (float32)."""

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    x = resize_like_tf1(images.astype(jnp.float32))
    x = (x - 128) / 128
    x = _conv(32, 3, stride=2, name="Conv2d_1a_3x3")(x)
    x = _conv(32, 3, name="Conv2d_2a_3x3")(x)
    x = _conv(64, 3, padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_stride_2(x)
    x = _conv(80, 1, name="Conv2d_3b_1x1")(x)
    x = _conv(192, 3, name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_stride_2(x)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    x = InceptionC(128, name="Mixed_6b")(x)
    x = InceptionC(160, name="Mixed_6c")(x)
    x = InceptionC(160, name="Mixed_6d")(x)
    x = InceptionC(192, name="Mixed_6e")(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE("avg", name="Mixed_7b")(x)
    x = InceptionE("max", name="Mixed_7c")(x)
    pool = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(NUM_LOGITS, use_bias=False, precision=PRECISION, name="fc")(pool)
    return {"pool": pool, "logits_unbiased": logits}


# Flax leaf name -> torch-fidelity state-dict suffix.
_TORCH_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
               "var": "running_var"}


def _torch_key(path: tuple[str, ...]) -> str:
  """E.g. ('batch_stats', 'Mixed_5b', 'branch1x1', 'bn', 'mean') ->
  'Mixed_5b.branch1x1.bn.running_mean'."""
  *modules, leaf = path[1:]
  return ".".join([*modules, _TORCH_LEAF[leaf]])


@functools.lru_cache(maxsize=1)
def abstract_variables() -> dict:
  """Shapes of the module's variables ({'params', 'batch_stats'}); the input size is irrelevant."""
  return jax.eval_shape(InceptionV3Compat().init, jax.random.key(0),
                        jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.uint8))


def torch_keys() -> list[str]:
  """The state-dict keys `load_inception_variables` reads."""
  paths = jax.tree_util.tree_flatten_with_path(abstract_variables())[0]
  return [_torch_key(tuple(p.key for p in path)) for path, _ in paths]


def load_inception_variables(state: dict[str, np.ndarray], source="state dict") -> dict:
  """torch-fidelity `inception-v3-compat` state dict -> this module's float32 variables.

  Unused entries (`fc.bias`, `*.num_batches_tracked`) are ignored. Raises ValueError naming
  the missing or mis-shaped key, its expected shape and `source`.
  """
  return torch_weights.to_flax_variables(state, abstract_variables(), _torch_key, source)
