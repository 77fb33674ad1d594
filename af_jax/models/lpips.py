"""LPIPS with a VGG16 backbone, as the `lpips` package's `LPIPS(net='vgg')` computes it (NHWC).

    d(x0, x1) = sum over layers l of  mean over (h, w) of  sum over c of
                w_lc * (f_l(x0)[h, w, c] - f_l(x1)[h, w, c])^2

where f_l is the VGG16 activation after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 of the
input passed through the scaling layer ((x - shift) / scale, inputs in [-1, 1]), unit-normalised
over channels (x / (||x|| + 1e-10)), and w_l are the five non-negative 1x1 "linear" heads
(no bias). The dropout before each head is inactive at evaluation.

`LPIPS` is the network; `distances` is the formula above on two batches of features (what
`LPIPS.__call__` returns); `cross_distances` is the same quantity for every pair of two sets,
through the expansion |a - b|^2_w = |a|^2_w + |b|^2_w - 2 <a, b>_w, so a set of M images can
be compared with N others from N + M forward passes and matrix products instead of N x M
forward passes.

Weights: the backbone is torchvision's ImageNet `vgg16` (`features.N.*`, which `lpips` slices
as `net.slice{1..5}.N.*`); the heads and the scaling layer are the `lpips` package's
(`lin{0..4}.model.1.weight`, `scaling_layer.shift/scale`). `load_lpips_variables(state,
heads)` accepts either backbone naming and takes the heads from `heads` when `state` has none.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from af_jax.models import torch_weights

# VGG16 `features` up to relu5_3: (torchvision index, output channels) of each conv; 'M' is a
# 2x2 max pool. lpips groups them into five slices, each ending at a tapped ReLU.
VGG16_LAYERS = ((0, 64), (2, 64), "M", (5, 128), (7, 128), "M", (10, 256), (12, 256), (14, 256),
                "M", (17, 512), (19, 512), (21, 512), "M", (24, 512), (26, 512), (28, 512))
TAPPED_CONVS = (2, 7, 14, 21, 28)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
TAP_CHANNELS = (64, 128, 256, 512, 512)
NORMALIZE_EPSILON = 1e-10
PRECISION = jax.lax.Precision.HIGHEST  # Full float32 on accelerators too (no TF32).


def _slice_of(conv_index: int) -> int:
  """lpips' slice (1..5) holding a torchvision conv index."""
  return 1 + sum(conv_index > tap for tap in TAPPED_CONVS)


class VGG16Taps(nn.Module):
  """torchvision's VGG16 `features` up to relu5_3; returns the five tapped ReLU outputs."""

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    taps = []
    for layer in VGG16_LAYERS:
      if layer == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        continue
      index, width = layer
      x = nn.relu(nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), precision=PRECISION,
                          name=f"conv_{index}")(x))
      if index in TAPPED_CONVS:
        taps.append(x)
    return taps


class LPIPS(nn.Module):
  """`__call__(x0, x1)`: LPIPS-VGG distances [N] of two float batches [N, H, W, 3] in [-1, 1]."""

  def setup(self):
    # The scaling buffers and heads keep torch's [1, C, 1, 1] shapes (the state dict's).
    self.shift = self.param("shift", nn.initializers.zeros, (1, 3, 1, 1))
    self.scale = self.param("scale", nn.initializers.ones, (1, 3, 1, 1))
    self.net = VGG16Taps()
    self.heads = [self.param(f"lin{k}", nn.initializers.ones, (1, c, 1, 1))
                  for k, c in enumerate(TAP_CHANNELS)]

  def features(self, x: jax.Array) -> list[jax.Array]:
    """The five unit-normalised taps of a batch in [-1, 1]."""
    x = (x - self.shift.reshape(1, 1, 1, 3)) / self.scale.reshape(1, 1, 1, 3)
    return [f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + NORMALIZE_EPSILON)
            for f in self.net(x)]

  def __call__(self, x0: jax.Array, x1: jax.Array) -> jax.Array:
    return distances(self.features(x0), self.features(x1), [w.reshape(-1) for w in self.heads])


def head_vectors(variables) -> list[jax.Array]:
  """The five 1x1 heads of loaded variables as vectors [C], for `distances` & co."""
  return [jnp.reshape(variables["params"][f"lin{k}"], -1) for k in range(len(TAP_CHANNELS))]


def distances(features0, features1, heads) -> jax.Array:
  """LPIPS [N] of paired feature lists: heads on squared differences, spatial mean, sum."""
  total = 0.0
  for f0, f1, w in zip(features0, features1, heads):
    total = total + jnp.mean(jnp.sum((f0 - f1) ** 2 * w, axis=-1), axis=(1, 2))
  return total


def self_terms(features, heads) -> jax.Array:
  """|a|^2_w of every image [N]: the LPIPS distance to an all-zero feature map."""
  return sum(jnp.mean(jnp.sum(f * f * w, axis=-1), axis=(1, 2)) for f, w in zip(features, heads))


def cross_distances(features0, features1, heads, self0=None, self1=None) -> jax.Array:
  """LPIPS of every pair [N, M] of two feature sets (module docstring).

  `self0` / `self1` are the sets' `self_terms` when already known. Values are clipped at 0:
  rounding can leave a near-duplicate pair a hair below.
  """
  self0 = self_terms(features0, heads) if self0 is None else self0
  self1 = self_terms(features1, heads) if self1 is None else self1
  inner = 0.0
  for f0, f1, w in zip(features0, features1, heads):
    area = f0.shape[1] * f0.shape[2]
    inner = inner + jnp.einsum("nhwc,mhwc->nm", f0 * w, f1, precision=PRECISION) / area
  return jnp.maximum(self0[:, None] + self1[None, :] - 2 * inner, 0.0)


@functools.lru_cache(maxsize=1)
def abstract_variables() -> dict:
  """Shapes of the module's variables (the input size is irrelevant)."""
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  return jax.eval_shape(LPIPS().init, jax.random.key(0), x, x)


def _torch_key(path: tuple[str, ...], torchvision: bool) -> str:
  """Flax path -> state-dict key; the backbone in lpips' or torchvision's naming."""
  name = path[1]
  if name in ("shift", "scale"):
    return f"scaling_layer.{name}"
  if name.startswith("lin"):
    return f"{name}.model.1.weight"
  index = int(path[2].split("_")[1])  # ('params', 'net', 'conv_N', leaf)
  leaf = "weight" if path[-1] == "kernel" else "bias"
  if torchvision:
    return f"features.{index}.{leaf}"
  return f"net.slice{_slice_of(index)}.{index}.{leaf}"


def uses_torchvision_names(state: dict) -> bool:
  """Whether a state dict names the VGG16 backbone as torchvision does (`features.N.*`)."""
  return any(key.startswith("features.") for key in state)


def torch_keys(torchvision: bool = False) -> list[str]:
  """The state-dict keys `load_lpips_variables` reads, in the given backbone naming."""
  paths = jax.tree_util.tree_flatten_with_path(abstract_variables())[0]
  return [_torch_key(tuple(p.key for p in path), torchvision) for path, _ in paths]


def load_lpips_variables(state: dict[str, np.ndarray], heads: dict[str, np.ndarray],
                         source="state dict") -> dict:
  """A state dict (lpips or torchvision VGG16 naming) + default heads -> float32 variables.

  `heads` supplies `scaling_layer.*` and `lin{0..4}.model.1.weight` wherever `state` lacks
  them. Raises ValueError naming the missing or mis-shaped key (in `state`'s naming) and its
  expected shape.
  """
  torchvision = uses_torchvision_names(state)
  return torch_weights.to_flax_variables(
      {**heads, **state}, abstract_variables(),
      lambda path: _torch_key(path, torchvision), source)
