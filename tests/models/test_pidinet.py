"""PiDiNet port: weight import and a forward pass checked against an independent numpy reference.

The reference below never folds kernels: it applies each pixel-difference convolution as the
differences the PiDiNet paper defines (cd: neighbour minus centre; ad: each ring pixel minus its
clockwise neighbour; rd: the pixel two steps out minus the pixel one step out, per direction),
reading the raw weights straight from the official state dict.
"""

import filecmp
import importlib.util
import pathlib

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from af_jax.models import pidinet

# 3x3 taps in row-major order as (dy, dx); tap 4 is the centre.
OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
CLOCKWISE_RING = [0, 1, 2, 5, 8, 7, 6, 3]
DIRECTIONS = [offset for offset in OFFSETS if offset != (0, 0)]


def _shift(x, dy, dx, dilation=1):
  """x[i + dy * dilation, j + dx * dilation] with zeros outside the image (HWC)."""
  pad = 2 * dilation
  padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
  height, width = x.shape[:2]
  top, left = pad + dy * dilation, pad + dx * dilation
  return padded[top:top + height, left:left + width]


def _conv3x3(x, weight, dilation=1):
  """Dense 3x3 conv, zero padding = dilation; weight (out, in, 3, 3)."""
  taps = weight.reshape(weight.shape[0], weight.shape[1], 9)
  return sum(_shift(x, dy, dx, dilation) @ taps[:, :, t].T for t, (dy, dx) in enumerate(OFFSETS))


def _pixel_difference(x, weight, pdc):
  """Raw pixel-difference conv; weight (out, in, 3, 3), depthwise when in == 1."""
  taps = weight.reshape(weight.shape[0], weight.shape[1], 9)

  def weighted(t, difference):  # sum over input channels of w[:, :, t] * difference
    if taps.shape[1] == 1:
      return difference * taps[:, 0, t]
    return difference @ taps[:, :, t].T

  neighbours = [_shift(x, dy, dx) for dy, dx in OFFSETS]
  if pdc == "cv":
    return sum(weighted(t, neighbours[t]) for t in range(9))
  if pdc == "cd":
    return sum(weighted(t, neighbours[t] - x) for t in range(9))
  if pdc == "ad":
    following = CLOCKWISE_RING[1:] + CLOCKWISE_RING[:1]
    return sum(weighted(t, neighbours[t] - neighbours[n])
               for t, n in zip(CLOCKWISE_RING, following))
  if pdc == "rd":  # direction k uses raw tap k + 1 (the official parameterization)
    return sum(weighted(k + 1, _shift(x, 2 * dy, 2 * dx) - _shift(x, dy, dx))
               for k, (dy, dx) in enumerate(DIRECTIONS))
  raise AssertionError(pdc)


def _conv1x1(x, weight, bias=None):
  y = x @ weight[:, :, 0, 0].T
  return y if bias is None else y + bias


def _max_pool2(x):
  height, width, channels = x.shape
  x = x[:height // 2 * 2, :width // 2 * 2]
  return x.reshape(height // 2, 2, width // 2, 2, channels).max(axis=(1, 3))


def _upsample_bilinear(x, height, width):
  """PyTorch `interpolate(mode='bilinear', align_corners=False)` for one HWC image."""

  def weights_along(size_in, size_out):
    source = np.maximum((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0)
    low = np.minimum(np.floor(source).astype(int), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    matrix = np.zeros((size_out, size_in))
    np.add.at(matrix, (np.arange(size_out), low), 1 - (source - low))
    np.add.at(matrix, (np.arange(size_out), high), source - low)
    return matrix

  rows, cols = weights_along(x.shape[0], height), weights_along(x.shape[1], width)
  return np.einsum("hi,ijc,wj->hwc", rows, x, cols)


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def reference_pidinet(sd, rgb01):
  """Fused edge probability [H, W] of one RGB image in [0, 1] from a raw state dict."""
  height, width = rgb01.shape[:2]
  x = (rgb01 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  pdc_types = iter(["cd", "ad", "rd", "cv"] * 4)
  x = _pixel_difference(x, sd["init_block.weight"], next(pdc_types))
  sides = []
  for stage, blocks in enumerate([3, 4, 4, 4]):
    for index in range(1, blocks + 1):
      name = f"block{stage + 1}_{index}"
      if stage > 0 and index == 1:
        x = _max_pool2(x)
      y = np.maximum(_pixel_difference(x, sd[f"{name}.conv1.weight"], next(pdc_types)), 0)
      y = _conv1x1(y, sd[f"{name}.conv2.weight"])
      shortcut = f"{name}.shortcut.weight"
      x = y + (_conv1x1(x, sd[shortcut], sd[f"{name}.shortcut.bias"]) if shortcut in sd else x)
    d = f"dilations.{stage}"
    h = _conv1x1(np.maximum(x, 0), sd[f"{d}.conv1.weight"], sd[f"{d}.conv1.bias"])
    h = sum(_conv3x3(h, sd[f"{d}.conv2_{i}.weight"], rate)
            for i, rate in enumerate([5, 7, 9, 11], 1))
    a = f"attentions.{stage}"
    attention = _conv1x1(np.maximum(h, 0), sd[f"{a}.conv1.weight"], sd[f"{a}.conv1.bias"])
    h = h * _sigmoid(_conv3x3(attention, sd[f"{a}.conv2.weight"]))
    r = f"conv_reduces.{stage}.conv"
    sides.append(_upsample_bilinear(_conv1x1(h, sd[f"{r}.weight"], sd[f"{r}.bias"]),
                                    height, width))
  fused = _conv1x1(np.concatenate(sides, axis=-1), sd["classifier.weight"], sd["classifier.bias"])
  return _sigmoid(fused[..., 0])


def _state_dict(path):
  with np.load(path) as arrays:
    return {key: arrays[key].astype(np.float64) for key in arrays.files}


def _bottle_rgb01(bottle_dir, name, size):
  bgr = cv2.imread(str(bottle_dir / "train" / "good" / name))
  small = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
  return cv2.cvtColor(small, cv2.COLOR_BGR2RGB).astype(np.float32) / 255


@pytest.mark.parametrize("name, size", [("000.png", (128, 128)), ("007.png", (118, 100))])
def test_flax_port_matches_unfolded_numpy_reference(bottle_dir, pidinet_npz, name, size):
  rgb = _bottle_rgb01(bottle_dir, name, size)
  params = pidinet.load_pidinet_params(pidinet_npz)
  fused = jax.jit(pidinet.model_for_params(params).apply)({"params": params}, rgb[None])
  expected = reference_pidinet(_state_dict(pidinet_npz), rgb.astype(np.float64))
  assert fused.shape == (1, size[1], size[0], 1)
  assert expected.max() > 0.5  # the bottle's rims are confident edges, so the check has teeth
  np.testing.assert_allclose(np.asarray(fused[0, ..., 0]), expected, atol=1e-3, rtol=0)


def test_shipped_weights_are_the_official_npz(pidinet_npz):
  shipped = pathlib.Path(pidinet.__file__).parents[1] / "pretrained" / "table5_pidinet.npz"
  assert filecmp.cmp(shipped, pidinet_npz, shallow=False)
  assert (shipped.parent / "LICENSE-pidinet").read_text().startswith("It is just for research")
  default, explicit = pidinet.load_pidinet_params(), pidinet.load_pidinet_params(pidinet_npz)
  assert jax.tree.all(jax.tree.map(np.array_equal, default, explicit))


def test_folded_params_have_the_model_shapes_and_real_sizes():
  params = pidinet.load_pidinet_params()
  model = pidinet.model_for_params(params)
  assert (model.channels, model.dil) == (60, 24)
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  assert jax.tree.map(np.shape, params) == jax.tree.map(lambda leaf: leaf.shape, abstract)
  assert params["block1_2"]["conv1"]["kernel"].shape == (5, 5, 1, 60)  # rd folds to 5x5
  assert params["block4_4"]["conv2"]["kernel"].shape == (1, 1, 240, 240)


@pytest.mark.skipif(importlib.util.find_spec("af_jax.models.torch_weights") is None,
                    reason="af_jax.models.torch_weights (the .pth reader) is not written yet")
def test_pth_checkpoints_load_like_the_npz(pidinet_pth, pidinet_npz):
  from_pth, from_npz = (pidinet.load_pidinet_params(pidinet_pth),
                        pidinet.load_pidinet_params(pidinet_npz))
  assert jax.tree.all(jax.tree.map(np.array_equal, from_pth, from_npz))
  tiny = pidinet.load_pidinet_params(pidinet_pth.with_name("table5_pidinet-tiny.pth"))
  model = pidinet.model_for_params(tiny)
  assert (model.channels, model.dil) == (20, 8)
  edges = jax.jit(model.apply)({"params": tiny}, np.full((1, 24, 40, 3), 0.5, np.float32))
  assert edges.shape == (1, 24, 40, 1)


def _write_npz(path, state_dict):
  np.savez(path, **state_dict)
  return path


def test_bad_state_dicts_name_the_key(tmp_path, pidinet_npz):
  sd = dict(np.load(pidinet_npz))
  missing = {k: v for k, v in sd.items() if k != "attentions.2.conv2.weight"}
  with pytest.raises(ValueError, match=r"missing key 'attentions\.2\.conv2\.weight'"):
    pidinet.load_pidinet_params(_write_npz(tmp_path / "missing.npz", missing))
  wrong = {**sd, "block3_3.conv1.weight": np.zeros((240, 1, 5, 5), np.float32)}
  with pytest.raises(ValueError, match=r"'block3_3\.conv1\.weight' has shape \(240, 1, 5, 5\), "
                                       r"expected \(240, 1, 3, 3\)"):
    pidinet.load_pidinet_params(_write_npz(tmp_path / "wrong.npz", wrong))
  extra = {**sd, "block5_1.conv1.weight": np.zeros((1,), np.float32)}
  with pytest.raises(ValueError, match=r"unexpected keys \['block5_1\.conv1\.weight'\]"):
    pidinet.load_pidinet_params(_write_npz(tmp_path / "extra.npz", extra))
  prefixed = {f"module.{k}": v for k, v in sd.items()}
  assert pidinet.load_pidinet_params(_write_npz(tmp_path / "prefixed.npz", prefixed))
  with pytest.raises(ValueError, match=r"weights\.h5: unknown PiDiNet weight file type"):
    pidinet.load_pidinet_params(tmp_path / "weights.h5")
