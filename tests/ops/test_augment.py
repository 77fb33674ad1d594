"""Tests for af_jax.ops.augment on real MVTec AD bottle images (downscaled to 48 px)."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from af_jax.ops import augment

SIZE = 48
# Compiled once per shape and config: much faster than op-by-op dispatch.
sample = jax.jit(augment.sample_transform, static_argnums=(1, 2, 3, 4))
apply = jax.jit(augment.apply_transform, static_argnames="kind")
NO_AUGMENT = augment.AugmentConfig(local_tps=False, scale_range=(1.0, 1.0), shift_range=0.0,
                                   flip_lr_prob=0.0, flip_ud_prob=0.0)


@pytest.fixture(scope="module")
def bottle(bottle_dir):
  """(images in [-1, 1] [4, S, S, 3], binary Canny edge maps [4, S, S, 1]) of real bottles."""
  images = []
  for i in range(4):
    path = bottle_dir / "train" / "good" / f"{i:03d}.png"
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {path}"
    images.append(cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
  edges = np.stack([cv2.Canny(image, 100, 200) for image in images])[..., None] / 255.0
  images = np.stack(images)[..., ::-1] / 127.5 - 1.0
  return jnp.asarray(images, jnp.float32), jnp.asarray(edges, jnp.float32)


def identity_grid(batch_size, height, width):
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  grid = np.stack([rows, cols], -1).astype(np.float32)
  return np.broadcast_to(grid, (batch_size, height, width, 2))


def test_zero_strength_is_identity(bottle):
  images, edges = bottle
  transform = sample(jax.random.key(0), 4, SIZE, SIZE, NO_AUGMENT)
  np.testing.assert_array_equal(transform.grid, identity_grid(4, SIZE, SIZE))
  np.testing.assert_array_equal(apply(transform, images), images)
  np.testing.assert_array_equal(apply(transform, edges, kind="edges"), edges)
  # Enabled TPS with zero displacement is also the identity.
  zero_tps = augment.AugmentConfig(tps_displacement=0.0, scale_range=(1.0, 1.0), shift_range=0.0,
                                   flip_lr_prob=0.0, flip_ud_prob=0.0)
  transform = sample(jax.random.key(1), 4, SIZE, SIZE, zero_tps)
  np.testing.assert_array_equal(apply(transform, images), images)


def test_flips_match_numpy_and_are_involutions(bottle):
  images, _ = bottle
  flips = augment.AugmentConfig(local_tps=False, scale_range=(1.0, 1.0), shift_range=0.0,
                                flip_lr_prob=1.0, flip_ud_prob=1.0)
  transform = sample(jax.random.key(0), 4, SIZE, SIZE, flips)
  flipped = apply(transform, images)
  np.testing.assert_array_equal(flipped, images[:, ::-1, ::-1])
  np.testing.assert_array_equal(apply(transform, flipped), images)


@pytest.mark.parametrize("pad_mode", augment.PAD_MODES)
def test_resize_pads_per_mode(bottle, pad_mode):
  # Odd size and scale 1/2 put every source coordinate on a pixel centre:
  # output pixel q reads input 2q - 16 (per axis), 16 being the centre of 33.
  size = 33
  images = jax.image.resize(bottle[0], (4, size, size, 3), "linear")
  config = augment.AugmentConfig(local_tps=False, scale_range=(0.5, 0.5), shift_range=0.0,
                                 flip_lr_prob=0.0, flip_ud_prob=0.0, pad_mode=pad_mode)
  transform = sample(jax.random.key(0), 4, size, size, config)
  source = 2 * np.arange(size) - (size - 1) // 2
  inside = (source >= 0) & (source < size)
  if pad_mode == "reflect":
    index = np.abs(source)
    index = np.where(index > size - 1, 2 * (size - 1) - index, index)
  else:
    index = np.clip(source, 0, size - 1)
  expected = np.asarray(images)[:, index][:, :, index]
  if pad_mode == "constant":
    expected = expected * (inside[:, None] & inside[None, :])[None, ..., None]
  np.testing.assert_allclose(apply(transform, images), expected, atol=1e-6)


def test_resize_translate_grid_is_affine_within_ranges():
  config = augment.AugmentConfig(local_tps=False, flip_lr_prob=0.0, flip_ud_prob=0.0)
  transform = sample(jax.random.key(3), 8, SIZE, SIZE, config)
  output = identity_grid(1, SIZE, SIZE).reshape(-1, 2)
  design = np.concatenate([output, np.ones((len(output), 1))], 1)
  centre = (SIZE - 1) / 2
  for grid in np.asarray(transform.grid):
    # Source = c + (output - c - shift) / scale, i.e. output = scale * (source - c) + c + shift.
    coefficients, residual, *_ = np.linalg.lstsq(design, grid.reshape(-1, 2), rcond=None)
    assert residual.max() < 1e-4
    inverse_scale = coefficients[0, 0]
    np.testing.assert_allclose(coefficients[:2], inverse_scale * np.eye(2), atol=1e-5)
    scale = 1 / inverse_scale
    shift = centre * (scale - 1) - scale * coefficients[2]
    assert 0.8 - 1e-5 <= scale <= 1.2 + 1e-5
    assert np.all(np.abs(shift) <= 0.1 * SIZE + 1e-3)


def test_one_transform_moves_image_and_edges_identically():
  # Row and column encoded in the pixel values: the output must read them back
  # at the grid coordinates, and an edge map carrying the same ramp must follow.
  config = augment.AugmentConfig(tps_displacement=0.2, pad_mode="constant")
  transform = sample(jax.random.key(7), 4, SIZE, SIZE, config)
  coords = jnp.asarray(identity_grid(4, SIZE, SIZE))
  moved = np.asarray(apply(transform, coords))
  moved_edges = np.asarray(apply(transform, coords / (SIZE - 1), kind="edges"))
  grid = np.asarray(transform.grid)
  interior = np.all((grid >= 0) & (grid <= SIZE - 1), -1)
  assert interior.mean() > 0.5
  np.testing.assert_allclose(moved[interior], grid[interior], atol=1e-3)
  np.testing.assert_allclose(moved_edges * (SIZE - 1), moved, atol=1e-3)


def test_local_tps_moves_only_inside_its_window(bottle):
  images, _ = bottle
  config = augment.AugmentConfig(local_tps=True, tps_window=(0.25, 0.4), tps_displacement=0.2,
                                 scale_range=(1.0, 1.0), shift_range=0.0, flip_lr_prob=0.0,
                                 flip_ud_prob=0.0)
  transform = sample(jax.random.key(2), 4, SIZE, SIZE, config)
  out = np.asarray(apply(transform, images))
  moved = np.any(np.asarray(transform.grid) != identity_grid(4, SIZE, SIZE), -1)
  for example in range(4):
    rows, cols = np.nonzero(moved[example])
    assert rows.size > 0, f"example {example} was not warped"
    assert max(np.ptp(rows), np.ptp(cols)) <= 0.4 * (SIZE - 1)
    still = ~moved[example]
    np.testing.assert_array_equal(out[example][still], np.asarray(images)[example][still])
    assert np.abs(out[example] - np.asarray(images)[example]).max() > 0.05


def test_per_example_draws_differ_and_keys_determine_them():
  draw = lambda key: np.asarray(sample(key, 4, SIZE, SIZE, augment.AugmentConfig(local_tps=True)).grid)
  grid = draw(jax.random.key(0))
  for a in range(4):
    for b in range(a + 1, 4):
      assert not np.allclose(grid[a], grid[b])
  np.testing.assert_array_equal(draw(jax.random.key(0)), grid)
  assert not np.allclose(draw(jax.random.key(1)), grid)


def test_edge_maps_stay_in_range_and_binary(bottle):
  _, edges = bottle
  soft = np.stack([cv2.GaussianBlur(e, (5, 5), 1.0) for e in np.asarray(edges)])[..., None]
  soft = soft / soft.max()
  transform = sample(jax.random.key(4), 4, SIZE, SIZE, augment.AugmentConfig(local_tps=True))
  out = np.asarray(apply(transform, soft, kind="edges"))
  assert out.min() >= 0 and out.max() <= 1
  assert len(np.unique(out)) > 2
  binary = sample(jax.random.key(4), 4, SIZE, SIZE, augment.AugmentConfig(local_tps=True, edge_threshold=0.5))
  out = np.asarray(apply(binary, edges, kind="edges"))
  assert set(np.unique(out)) == {0.0, 1.0}


def test_vmap_matches_batched_call_and_dtype_is_kept(bottle):
  images, edges = bottle
  config = augment.AugmentConfig(local_tps=True)
  keys = jax.random.split(jax.random.key(6), 3)

  @jax.jit
  def sample_and_apply_per_key(keys):
    transforms = jax.vmap(lambda key: augment.sample_transform(key, 4, SIZE, SIZE, config))(keys)
    return jax.vmap(lambda t: augment.apply_transform(t, edges, kind="edges"))(transforms)

  out = sample_and_apply_per_key(keys)
  assert out.shape == (3, 4, SIZE, SIZE, 1)
  one_key = apply(sample(keys[1], 4, SIZE, SIZE, config), edges, kind="edges")
  np.testing.assert_allclose(out[1], one_key, atol=1e-4)
  transform = sample(keys[0], 4, SIZE, SIZE, config)
  half = apply(transform, images.astype(jnp.bfloat16))
  assert half.dtype == jnp.bfloat16
  np.testing.assert_allclose(half.astype(jnp.float32), apply(transform, images), atol=0.03)


def test_bad_inputs_are_named(bottle):
  images, _ = bottle
  with pytest.raises(ValueError, match="pad_mode"):
    augment.AugmentConfig(pad_mode="wrap")
  with pytest.raises(ValueError, match="scale_range"):
    augment.AugmentConfig(scale_range=(1.2, 0.8))
  transform = sample(jax.random.key(0), 4, SIZE, SIZE, augment.AugmentConfig(local_tps=True))
  with pytest.raises(ValueError, match="kind"):
    apply(transform, images, kind="mask")
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    apply(transform, images[:, :32])
