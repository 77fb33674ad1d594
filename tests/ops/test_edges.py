"""Edge extraction on real bottle images: PiDiNet batching and device function, Canny fallback."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from af_jax.ops import edges

SIZE = 64


@pytest.fixture(scope="module")
def bottles(bottle_dir):
  """Three real bottle images, uint8 RGB, downscaled to SIZE x SIZE."""
  paths = sorted((bottle_dir / "train" / "good").glob("*.png"))[:3]
  return np.stack([cv2.cvtColor(cv2.resize(cv2.imread(str(p)), (SIZE, SIZE),
                                           interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
                   for p in paths])


def test_pidinet_edges_are_probabilities_independent_of_batching(bottles):
  batched = edges.pidinet_edges(bottles, batch_size=2)  # second chunk is padded
  assert batched.shape == (3, SIZE, SIZE) and batched.dtype == np.float32
  assert 0 <= batched.min() and batched.max() <= 1
  assert batched.max() > 0.5  # the bottle rims are found
  one_by_one = np.concatenate([edges.pidinet_edges(image[None], batch_size=2)
                               for image in bottles])
  np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
  assert edges.pidinet_edges(bottles[:0]).shape == (0, SIZE, SIZE)


def test_edge_fn_is_a_jittable_pytree_matching_pidinet_edges(bottles):
  expected = edges.pidinet_edges(bottles, batch_size=2)
  signed = jnp.asarray(bottles, jnp.float32) / 127.5 - 1
  edge_fn = edges.make_edge_fn()
  assert edges.make_edge_fn() is edge_fn  # one set of weights per checkpoint and dtype
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(edge_fn))
  apply = jax.jit(lambda fn, x: fn(x))
  full = apply(edge_fn, signed)
  assert full.shape == (3, SIZE, SIZE, 1) and full.dtype == jnp.float32
  np.testing.assert_allclose(full[..., 0], expected, atol=1e-5)
  half = apply(edges.make_edge_fn(dtype=jnp.bfloat16), signed)
  assert half.dtype == jnp.float32
  assert 0 < float(jnp.mean(jnp.abs(half - full))) < 0.02


def test_canny_fallback_is_binary(bottles):
  canny = edges.canny_edges(bottles)
  assert canny.shape == (3, SIZE, SIZE) and canny.dtype == np.float32
  assert set(np.unique(canny)) == {0.0, 1.0}
  flat = np.full((1, SIZE, SIZE, 3), 128, np.uint8)
  assert not edges.canny_edges(flat).any()
  np.testing.assert_array_equal(edges.compute_edges(bottles, method="canny"), canny)
  assert edges.canny_edges(bottles[:0]).shape == (0, SIZE, SIZE)


def test_bad_inputs_are_refused(bottles):
  with pytest.raises(ValueError, match="unknown edge method 'sobel'"):
    edges.compute_edges(bottles, method="sobel")
  with pytest.raises(ValueError, match=r"expected uint8 RGB images \[N, H, W, 3\], got float32"):
    edges.pidinet_edges(bottles.astype(np.float32))
  with pytest.raises(ValueError, match=r"got uint8 \(64, 64, 3\)"):
    edges.canny_edges(bottles[0])


def test_small_images_show_parts_not_just_the_outline():
  """At 64 px PiDiNet alone sees the board's outline; upsampled, it finds the components."""
  from af_jax.models import pidinet
  from af_jax.data_builders.synthetic import render
  boards = np.stack([render.render_normal(np.random.default_rng(seed), "circuit", SIZE)
                     for seed in range(3)])
  assert edges.pidinet_upscale(SIZE, SIZE) == 2 and edges.pidinet_upscale(300, 200) == 1
  upscaled = edges.pidinet_edges(boards)
  params = pidinet.load_pidinet_params(None)
  native = np.asarray(pidinet.model_for_params(params, jnp.float32).apply(
      {"params": params}, jnp.asarray(boards, jnp.float32) / 255))[..., 0]
  inside = (slice(None), slice(20, 44), slice(20, 44))  # the middle of the board: components
  assert upscaled[inside].mean() > 3 * native[inside].mean()
  assert upscaled.max() > 0.9  # the board outline stays a confident edge
