"""PiDiNet edge detector (Su et al., ICCV 2021) in Flax linen, and its weight import.

The network is the official `table5_pidinet` ("carv4" with CSAM and CDCM): C = 60 channels and
CDCM width 24 (`channels=20, dil=8` gives the "tiny" variant). It takes RGB in [0, 1] (NHWC),
applies the ImageNet normalization the official code uses, and returns the fused edge probability
[B, H, W, 1] in float32. Any H and W work (pooling floors odd sizes, as PyTorch does).

Pixel-difference convolutions are linear in their weights, so each equals a plain convolution with
a rearranged kernel. `load_pidinet_params` folds them once, at load time, exactly as the authors'
`convert_pidinet` does; the network below then only has vanilla convolutions and runs at plain
convolution speed on any device. Folding of a 3x3 weight with taps w0..w8 (row-major):

  cv  unchanged.
  cd  (central difference) the centre tap w4 minus the sum of all taps.
  ad  (angular difference) W - W[perm], perm = (3, 0, 1, 6, 4, 2, 7, 8, 5): each ring tap minus
      its clockwise neighbour.
  rd  (radial difference) a 5x5 kernel (padding 2): w1..w8 on the outer ring positions
      (0, 2, 4, 10, 14, 20, 22, 24), -w1..-w8 on the inner ring (6, 7, 8, 11, 13, 16, 17, 18).

Flax parameter names mirror the PyTorch state dict (`block2_1/shortcut/kernel` is
`block2_1.shortcut.weight`, `dilations_0/conv2_1` is `dilations.0.conv2_1`), so an error about a
key names the key the user sees in their checkpoint.

Computation runs in `dtype` (bfloat16 on accelerators is fine for edges); parameters, the side
outputs after their last convolution, the upsampling and the fusion stay float32.
"""

import pathlib
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from af_jax import package_data

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

STAGE_BLOCKS = (3, 4, 4, 4)  # stage 1 follows the init block; stages 2-4 start by pooling
STAGE_WIDTHS = (1, 2, 4, 4)  # multiples of `channels`
CDCM_DILATIONS = (5, 7, 9, 11)
CSAM_WIDTH = 4

# The 16 pixel-difference convolutions in network order, with their type ("carv4" pattern).
PDC_LAYERS = tuple(zip(
    ("init_block",) + tuple(f"block{stage}_{index}"
                            for stage, blocks in enumerate(STAGE_BLOCKS, 1)
                            for index in range(1, blocks + 1)),
    ("cd", "ad", "rd", "cv") * 4))
PDC_TYPES = dict(PDC_LAYERS)

ANGULAR_PERMUTATION = (3, 0, 1, 6, 4, 2, 7, 8, 5)
RADIAL_OUTER = (0, 2, 4, 10, 14, 20, 22, 24)
RADIAL_INNER = (6, 7, 8, 11, 13, 16, 17, 18)

SHIPPED_WEIGHTS = "table5_pidinet.npz"


class DepthwiseConv(nn.Module):
  """Depthwise square conv without bias, zero padding `kernel_size // 2`, kernel (k, k, 1, C).

  Computed as a sum of shifted products, the same convolution: XLA:CPU ran the grouped
  convolution about 5x slower than this fused elementwise form (256 px, 60 channels).
  """
  kernel_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    size, (height, width, channels) = self.kernel_size, x.shape[1:]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (size, size, 1, channels),
                        jnp.float32).astype(self.dtype)
    pad = size // 2
    padded = jnp.pad(x.astype(self.dtype), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return sum(padded[:, dy:dy + height, dx:dx + width] * kernel[dy, dx, 0]
               for dy in range(size) for dx in range(size))


class PDCBlock(nn.Module):
  """Residual block: [max-pool 2] -> depthwise pixel-difference conv -> ReLU -> 1x1 conv.

  The downsampling block (first of stages 2-4) adds a 1x1 shortcut conv with bias; the others add
  their input unchanged. Radial-difference blocks use the folded 5x5 kernel.
  """
  features: int
  pdc: str
  downsample: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.downsample:
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    y = DepthwiseConv(5 if self.pdc == "rd" else 3, dtype=self.dtype, name="conv1")(x)
    y = nn.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype,
                name="conv2")(nn.relu(y))
    if self.downsample:
      x = nn.Conv(self.features, (1, 1), dtype=self.dtype, name="shortcut")(x)
    return y + x


class CDCM(nn.Module):
  """Compact dilation convolution module: ReLU, 1x1 conv, then four dilated 3x3 convs summed."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, (1, 1), dtype=self.dtype, name="conv1")(nn.relu(x))
    return sum(nn.Conv(self.features, (3, 3), kernel_dilation=rate, padding=rate, use_bias=False,
                       dtype=self.dtype, name=f"conv2_{i}")(x)
               for i, rate in enumerate(CDCM_DILATIONS, 1))


class CSAM(nn.Module):
  """Compact spatial attention: the input times a sigmoid map from ReLU -> 1x1 -> 3x3 convs."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.Conv(CSAM_WIDTH, (1, 1), dtype=self.dtype, name="conv1")(nn.relu(x))
    y = nn.Conv(1, (3, 3), padding=1, use_bias=False, dtype=self.dtype, name="conv2")(y)
    return x * nn.sigmoid(y)


class MapReduce(nn.Module):
  """1x1 conv to one channel: a stage's side output (logits), in float32."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Conv(1, (1, 1), name="conv")(x.astype(jnp.float32))


class PiDiNet(nn.Module):
  """PiDiNet with CSAM and CDCM on folded (vanilla) kernels; RGB in [0, 1] -> edge probability."""
  channels: int = 60
  dil: int = 24
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, rgb: jax.Array) -> jax.Array:
    batch, height, width, _ = rgb.shape
    x = (rgb.astype(jnp.float32) - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    x = nn.Conv(self.channels, (3, 3), padding=1, use_bias=False, dtype=self.dtype,
                name="init_block")(x.astype(self.dtype))
    pdc_types = iter(pdc for _, pdc in PDC_LAYERS[1:])
    side_logits = []
    for stage, (blocks, width_multiple) in enumerate(zip(STAGE_BLOCKS, STAGE_WIDTHS)):
      for index in range(1, blocks + 1):
        x = PDCBlock(self.channels * width_multiple, next(pdc_types),
                     downsample=stage > 0 and index == 1, dtype=self.dtype,
                     name=f"block{stage + 1}_{index}")(x)
      side = CDCM(self.dil, dtype=self.dtype, name=f"dilations_{stage}")(x)
      side = CSAM(dtype=self.dtype, name=f"attentions_{stage}")(side)
      side = MapReduce(name=f"conv_reduces_{stage}")(side)
      if side.shape[1:3] != (height, width):
        # jax's bilinear resize samples at half-pixel centres and renormalizes at the border,
        # which equals PyTorch's `interpolate(..., align_corners=False)` when upsampling.
        side = jax.image.resize(side, (batch, height, width, 1), "bilinear")
      side_logits.append(side)
    fused = nn.Conv(1, (1, 1), name="classifier")(jnp.concatenate(side_logits, axis=-1))
    return nn.sigmoid(fused)


def fold_pixel_difference(weight: np.ndarray, pdc: str) -> np.ndarray:
  """Folds a raw pixel-difference weight (out, in/groups, 3, 3) into a plain conv kernel (OIHW).

  Returns a 3x3 kernel for 'cv', 'cd' and 'ad', and a 5x5 kernel (to apply with padding 2) for
  'rd'; see the module docstring for the rules.
  """
  out_channels, in_channels = weight.shape[:2]
  taps = weight.reshape(out_channels, in_channels, 9)
  if pdc == "cv":
    return weight
  if pdc == "cd":
    folded = taps.copy()
    folded[:, :, 4] -= taps.sum(axis=-1)
    return folded.reshape(weight.shape)
  if pdc == "ad":
    return (taps - taps[:, :, ANGULAR_PERMUTATION]).reshape(weight.shape)
  if pdc == "rd":
    folded = np.zeros((out_channels, in_channels, 25), weight.dtype)
    folded[:, :, RADIAL_OUTER] = taps[:, :, 1:]
    folded[:, :, RADIAL_INNER] = -taps[:, :, 1:]
    return folded.reshape(out_channels, in_channels, 5, 5)
  raise ValueError(f"unknown pixel-difference type {pdc!r}; expected 'cv', 'cd', 'ad' or 'rd'")


def model_for_params(params: dict, dtype: Any = jnp.float32) -> PiDiNet:
  """The PiDiNet whose width (60 or 20) and CDCM width (24 or 8) match converted `params`."""
  return PiDiNet(channels=params["init_block"]["kernel"].shape[-1],
                 dil=params["dilations_0"]["conv1"]["kernel"].shape[-1], dtype=dtype)


def load_pidinet_params(path: str | pathlib.Path | None = None) -> dict:
  """Loads a PiDiNet state dict and returns Flax params with folded pixel-difference kernels.

  Args:
    path: None for the `table5_pidinet` weights shipped inside the package; a `.npz` of the state
      dict (keys as in PyTorch, with or without the 'module.' prefix); or the official `.pth`
      checkpoint (read without executing pickled code by `af_jax.models.torch_weights`).

  Returns:
    The params pytree (float32 numpy arrays) for `model_for_params(params)`.

  Raises:
    ValueError: a missing, unexpected or wrongly shaped key (named in the message), or an unknown
      file type.
  """
  if path is None:
    with package_data.pretrained_file(SHIPPED_WEIGHTS) as shipped:
      return convert_state_dict(_read_npz(shipped), source=str(shipped))
  path = pathlib.Path(path)
  if path.suffix == ".npz":
    state_dict = _read_npz(path)
  elif path.suffix == ".pth":
    from af_jax.models import torch_weights  # Imported lazily: only .pth users need it.
    state_dict = torch_weights.load_state_dict(path)
  else:
    raise ValueError(f"{path}: unknown PiDiNet weight file type; expected .npz or .pth")
  return convert_state_dict(state_dict, source=str(path))


def convert_state_dict(state_dict: dict, source: str = "state dict") -> dict:
  """Maps a PiDiNet PyTorch state dict (numpy arrays) to Flax params, folding the PDC kernels.

  The network size is read from `init_block.weight` and `dilations.0.conv1.weight`; every other
  key must then exist with the shape that size implies, and no key may be left over.
  """
  state_dict = {key.removeprefix("module."): np.asarray(value)
                for key, value in state_dict.items()}
  channels = _require(state_dict, "init_block.weight", source).shape[0]
  dil = _require(state_dict, "dilations.0.conv1.weight", source).shape[0]
  abstract = jax.eval_shape(PiDiNet(channels, dil).init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32))["params"]
  params = {}
  for path, leaf in traverse_util.flatten_dict(abstract).items():
    key = _torch_key(path)
    value = _require(state_dict, key, source)
    pdc = PDC_TYPES.get(path[0]) if path[1:] in (("kernel",), ("conv1", "kernel")) else None
    expected = _torch_shape(leaf.shape, pdc)
    if value.shape != expected:
      raise ValueError(f"{source}: key '{key}' has shape {value.shape}, expected {expected}")
    if pdc is not None:
      value = fold_pixel_difference(value, pdc)
    if path[-1] == "kernel":
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    params[path] = value.astype(np.float32)
  unexpected = sorted(set(state_dict) - {_torch_key(path) for path in params})
  if unexpected:
    raise ValueError(f"{source}: unexpected keys {unexpected} for a PiDiNet with "
                     f"channels={channels}, dil={dil}")
  return traverse_util.unflatten_dict(params)


def _read_npz(path: pathlib.Path) -> dict:
  with np.load(path, allow_pickle=False) as arrays:
    return {key: arrays[key] for key in arrays.files}


def _require(state_dict: dict, key: str, source: str) -> np.ndarray:
  if key not in state_dict:
    raise ValueError(f"{source}: missing key '{key}' (expected a PiDiNet CSAM+CDCM state dict "
                     "such as table5_pidinet)")
  return state_dict[key]


def _torch_key(path: tuple[str, ...]) -> str:
  names = [re.sub(r"^(dilations|attentions|conv_reduces)_(\d+)$", r"\1.\2", name)
           for name in path[:-1]]
  return ".".join(names + ["weight" if path[-1] == "kernel" else path[-1]])


def _torch_shape(flax_shape: tuple[int, ...], pdc: str | None) -> tuple[int, ...]:
  if len(flax_shape) == 1:
    return flax_shape
  height, width, in_channels, out_channels = flax_shape
  if pdc == "rd":  # Stored as a raw 3x3 weight, folded to 5x5.
    height = width = 3
  return (out_channels, in_channels, height, width)
