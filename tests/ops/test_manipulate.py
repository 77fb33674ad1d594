"""Tests for af_jax.ops.manipulate on real MVTec AD bottle edge maps (downscaled to 64 px)."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from af_jax.ops import manipulate

SIZE = 64
BATCH = 8


@pytest.fixture(scope="module")
def bottle(bottle_dir):
  """(Canny edge maps float [B, S, S, 1] in {0, 1}, grey-level region maps uint8 [B, S, S, 1]).

  The region maps split each image into 4 grey-level bands (label 0, the
  darkest, is background): a stand-in for the build-time candidate regions
  that exercises the same label-map contract.
  """
  edges, regions = [], []
  for i in range(BATCH):
    path = bottle_dir / "train" / "good" / f"{i:03d}.png"
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert grey is not None, f"cannot read {path}"
    grey = cv2.resize(grey, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    edges.append(cv2.Canny(grey, 50, 150) / 255.0)
    regions.append(np.digitize(grey, [50, 100, 150]))
  return (jnp.asarray(np.stack(edges)[..., None], jnp.float32),
          jnp.asarray(np.stack(regions)[..., None], jnp.uint8))


SEMANTIC = dict(semantic_prob=1.0, max_semantic_regions=2, min_region_frac=0.01)


def run(seed, edges, regions, donor_edges=None, **config):
  new, mask, info = manipulate.manipulate_edges(jax.random.key(seed), edges, regions, donor_edges,
                                                config=manipulate.ManipulateConfig(**config))
  return np.asarray(new), np.asarray(mask), {k: np.asarray(v) for k, v in info.items()}


def test_edits_follow_the_op_inside_the_mask_only(bottle):
  edges, regions = bottle
  donors = jnp.asarray(np.random.default_rng(0).random(edges.shape), jnp.float32)
  new, mask, info = run(0, edges, regions, donors, donor_shift=0.0)
  edges, donors = np.asarray(edges), np.asarray(donors)
  assert set(np.unique(mask)) <= {0.0, 1.0}
  assert set(info["edit_op"]) == {0, 1, 2}, "a batch of 8 should show every op with this seed"
  for i, op in enumerate(info["edit_op"]):
    inside = mask[i, ..., 0] > 0
    assert inside.any()
    np.testing.assert_array_equal(new[i][~inside], edges[i][~inside])
    expected = {"remove": np.zeros_like(edges[i]), "replace": donors[i],
                "merge": np.maximum(edges[i], donors[i])}[manipulate.EDIT_OPS[op]]
    np.testing.assert_array_equal(new[i][inside], expected[inside])


# Replace only, in large stochastic regions, so the donor can be recognized.
REPLACE = dict(edit_op_probs=(0.0, 1.0, 0.0), semantic_prob=0.0, num_shapes=(3, 3),
               shape_size=(0.3, 0.3), donor_shift=0.1)


def find_donor(new, mask, candidates):
  """(candidate index, row shift, col shift) whose rolled edges fill the mask of `new`."""
  inside = mask[..., 0] > 0
  limit = int(REPLACE["donor_shift"] * SIZE)
  return [(j, dy, dx) for j, candidate in enumerate(candidates)
          for dy in range(-limit, limit + 1) for dx in range(-limit, limit + 1)
          if np.array_equal(new[inside], np.roll(candidate, (dy, dx), (0, 1))[inside])]


def test_default_donor_is_another_example_shifted_within_bounds(bottle):
  edges, regions = bottle
  new, mask, info = run(1, edges, regions, **REPLACE)
  assert np.all(info["edit_op"] == 1)
  edges = np.asarray(edges)
  donors = []
  for i in range(BATCH):
    matches = find_donor(new[i], mask[i], edges)
    assert matches, f"example {i}: the replaced edges are no shifted example of the batch"
    assert i not in [j for j, *_ in matches], f"example {i} was its own donor"
    donors.append(matches[0][0])
  assert len(set(donors)) == BATCH, "donors form a permutation"


def test_semantic_masks_are_unions_of_candidate_regions(bottle):
  edges, regions = bottle
  _, mask, info = run(3, edges, regions, **SEMANTIC)
  assert np.all(info["region_kind"] == 0)
  regions = np.asarray(regions)[..., 0]
  chosen_counts = set()
  for i in range(BATCH):
    inside = mask[i, ..., 0] > 0
    assert not np.any(inside & (regions[i] == 0)), "background is never selected"
    chosen = []
    for label in np.unique(regions[i]):
      selected = inside[regions[i] == label]
      assert selected.all() or not selected.any(), f"example {i}: label {label} partly selected"
      if selected.all():
        chosen.append(label)
        assert selected.size >= 0.01 * SIZE * SIZE, "a region below min_region_frac was chosen"
    assert 1 <= len(chosen) <= 2
    chosen_counts.add(len(chosen))
  assert chosen_counts == {1, 2}


def test_small_or_missing_regions_fall_back_to_stochastic(bottle):
  edges, _ = bottle
  tiny = np.zeros(edges.shape, np.uint8)
  tiny[:, :2, :2] = 1  # 4 px of 4096 is below min_region_frac = 0.01
  for regions in (tiny, np.zeros_like(tiny)):
    _, mask, info = run(4, edges, jnp.asarray(regions), **SEMANTIC)
    assert np.all(info["region_kind"] == 1)
    assert np.all(mask.sum((1, 2, 3)) > 0)


@pytest.mark.parametrize("kind", manipulate.SHAPE_KINDS)
def test_single_shapes_are_non_empty_and_bounded(bottle, kind):
  edges, regions = bottle
  size, aspect = 0.3, 3.0
  _, mask, info = run(5, edges, regions, semantic_prob=0.0, shape_kinds=(kind,),
                      shape_size=(0.1, size), num_shapes=(1, 1), aspect_ratio=(1 / aspect, aspect))
  assert np.all(info["region_kind"] == 1)
  area = mask.sum((1, 2, 3))
  assert np.all(area > 0)
  assert len(np.unique(area)) > 1, "shapes vary"
  # A shape fits in its rotated box of area (size x side)^2 with sides up to
  # size x side x sqrt(aspect); rasterization adds at most about a perimeter.
  side = size * SIZE
  assert np.all(area <= side ** 2 + 4 * side * np.sqrt(aspect))
  for example in mask[..., 0]:
    rows, cols = np.nonzero(example)
    assert max(np.ptp(rows), np.ptp(cols)) <= side * np.sqrt(aspect) + 1


def test_default_stochastic_masks_join_up_to_three_shapes(bottle):
  edges, regions = bottle
  _, mask, info = run(6, edges, regions)
  stochastic = info["region_kind"] == 1
  assert stochastic.any()
  area = mask[stochastic].sum((1, 2, 3))
  side = 0.3 * SIZE
  assert np.all(area > 0) and np.all(area <= 3 * (side ** 2 + 4 * side * np.sqrt(3.0)))


def test_mixing_ratio_and_determinism(bottle):
  edges, regions = bottle
  first = run(7, edges, regions)
  again = run(7, edges, regions)
  other = run(8, edges, regions)
  for a, b in zip(first[:2], again[:2]):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[1], other[1])
  kinds = np.concatenate([run(seed, edges, regions)[2]["region_kind"] for seed in range(9, 13)])
  assert 0.2 < kinds.mean() < 0.8, f"semantic_prob 0.5 gave stochastic share {kinds.mean()}"


def test_inside_an_outer_jit(bottle):
  edges, regions = bottle
  step = jax.jit(lambda key: manipulate.manipulate_edges(key, edges, regions)[0].sum())
  assert np.isfinite(step(jax.random.key(0)))


def test_batch_of_one_replaces_with_its_rotated_self(bottle):
  edges, regions = bottle
  edges, regions = edges[:1], regions[:1]
  new, mask, info = run(9, edges, regions, **REPLACE)
  assert info["edit_op"].shape == (1,) and info["region_kind"].shape == (1,)
  assert find_donor(new[0], mask[0], np.asarray(edges)[:, ::-1, ::-1])


def test_bad_inputs_are_named(bottle):
  edges, regions = bottle
  with pytest.raises(ValueError, match="regions must be an integer"):
    manipulate.manipulate_edges(jax.random.key(0), edges, regions.astype(jnp.float32))
  with pytest.raises(ValueError, match="edges must be"):
    manipulate.manipulate_edges(jax.random.key(0), edges[..., 0], regions[..., 0])
  with pytest.raises(ValueError, match="donor_edges"):
    manipulate.manipulate_edges(jax.random.key(0), edges, regions, edges[:2])
  with pytest.raises(ValueError, match="shape_kinds"):
    manipulate.ManipulateConfig(shape_kinds=("star",))
  with pytest.raises(ValueError, match="edit_op_probs"):
    manipulate.ManipulateConfig(edit_op_probs=(0.0, 0.0, 0.0))


def test_regions_centred_on_edges_always_change_the_edges():
  """Sparse edge maps (one thin ring, like a small bottle): uniform regions mostly edit nothing."""
  size = 64
  rows, cols = np.mgrid[:size, :size]
  ring = np.abs(np.hypot(rows - 32, cols - 32) - 24) < 1
  edges = jnp.asarray(np.broadcast_to(ring[None, ..., None], (64, size, size, 1)), jnp.float32)
  regions = jnp.zeros((64, size, size, 1), jnp.int32)
  changed = {}
  for prob in (0.0, 1.0):
    config = manipulate.ManipulateConfig(semantic_prob=0.0, edit_op_probs=(1.0, 0.0, 0.0),
                                         shape_size=(0.05, 0.1), centre_on_edges_prob=prob)
    new_edges, _, _ = manipulate.manipulate_edges(jax.random.PRNGKey(0), edges, regions,
                                                  config=config)
    changed[prob] = np.mean(np.any(np.asarray(new_edges) != np.asarray(edges), axis=(1, 2, 3)))
  assert changed[1.0] == 1.0 and changed[0.0] < 0.6


@pytest.mark.parametrize("centre_on_edges_prob", [0.0, 1.0])
def test_on_object_keeps_stochastic_regions_on_the_labelled_object(bottle, centre_on_edges_prob):
  edges, regions = bottle
  obj = np.asarray(regions) > 0
  config = dict(semantic_prob=0.0, centre_on_edges_prob=centre_on_edges_prob,
                shape_size=(0.2, 0.4))
  _, anywhere, _ = run(3, edges, regions, **config)
  _, kept, _ = run(3, edges, regions, on_object=True, **config)
  assert (anywhere.astype(bool) & ~obj).any()  # Large shapes spill onto the backdrop...
  assert not (kept.astype(bool) & ~obj).any()  # ...unless kept on the object,
  assert kept.reshape(BATCH, -1).max(1).min() == 1  # and no mask is empty.
  # A map that marks no object leaves the shapes as they were.
  _, none, _ = run(3, edges, jnp.zeros_like(regions), on_object=True, **config)
  _, plain, _ = run(3, edges, jnp.zeros_like(regions), **config)
  np.testing.assert_array_equal(none, plain)
