"""The patch memory behind `blaze.patch_guide`: patches, distances, leave-one-out, files."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from af_jax.evidence import baseline
from af_jax.evidence import patch_memory
from af_jax import pixels
from af_jax import stage_registry
from af_jax.configs import common


def _config(memory=2048, selection="random", **augment):
  c = common.get_config("blaze")
  c.blaze.reference = True
  c.blaze.patch_guide = True
  c.blaze.patch_memory = memory
  c.blaze.patch_selection = selection
  for name, value in augment.items():
    c.augment[name] = value
  return c


@pytest.fixture(scope="module")
def bottle_images(bottle_dir):
  """Six real MVTec AD bottle training images at 32 px."""
  paths = sorted((bottle_dir / "train" / "good").glob("*.png"))[:6]
  return np.stack([pixels.resize_image(pixels.read_rgb(p), 32) for p in paths])


def test_patches_are_the_floors_patches(bottle_images):
  r = 3
  padded = np.pad(bottle_images, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
  expected = pixels.uint8_to_unit(baseline.patches(padded, np.arange(6 * 32 * 32), 7))
  got = np.asarray(patch_memory.image_patches(pixels.uint8_to_unit(bottle_images), 7))
  np.testing.assert_array_equal(got.reshape(-1, 147), expected)


def test_nearest_distances_leave_the_named_source_out(bottle_images):
  flat = np.asarray(patch_memory.image_patches(pixels.uint8_to_unit(bottle_images), 7))
  flat = flat.reshape(6, 32 * 32, 147)
  memory, sources = flat[:2].reshape(-1, 147), np.repeat(np.arange(2), 32 * 32)
  queries = flat[0]
  brute = np.sqrt(((queries[:, None] - memory[None]) ** 2).sum(-1))
  for exclude, expected in ((-1, brute.min(1)), (0, brute[:, sources == 1].min(1))):
    got = patch_memory.nearest_distances(jnp.asarray(queries)[None], jnp.asarray(memory)[None],
                                         jnp.asarray(sources)[None], jnp.asarray([0]),
                                         jnp.asarray([exclude]))
    np.testing.assert_allclose(np.asarray(got)[0], expected, atol=1e-2)  # sqrt of rounding.
  # Its own image in the memory: every patch is found (up to float32 rounding).
  assert np.asarray(patch_memory.nearest_distances(
      jnp.asarray(queries)[None], jnp.asarray(memory)[None], jnp.asarray(sources)[None],
      jnp.asarray([0]), jnp.asarray([-1]))).max() < 1e-2


def _blocked_search_case(bottle_images, interpolated_memory: bool, gray: bool = False):
  """(queries [3, 1000, 147], memory [2, 4096, 147], sources, which, exclude) of the bottle
  images' 8-bit patches: a batch against its categories' memories, tiles that do not divide
  its queries, memories of several blocks. `interpolated_memory`: off the 8-bit levels, as
  the network's augmented memory is. `gray`: the images' green channel in all three."""
  if gray:
    bottle_images = np.repeat(bottle_images[..., 1:2], 3, axis=-1)
  flat = np.asarray(patch_memory.image_patches(pixels.uint8_to_unit(bottle_images), 7))
  flat = flat.reshape(6, 32 * 32, 147)
  memory = np.stack([flat[:4], flat[2:]]).reshape(2, 4 * 32 * 32, 147)  # 2 blocks each.
  if interpolated_memory:
    memory = 0.7 * memory + 0.3 * np.roll(memory, 1, axis=1)
  sources = np.tile(np.repeat(np.arange(4), 32 * 32), (2, 1))
  queries = np.stack([flat[5], flat[0], flat[1]])[:, :1000]  # Not a multiple of a tile.
  return queries, memory, sources, np.asarray([0, 1, 1]), np.asarray([-1, 2, -1])


def _brute_force(queries, memory, sources, which, exclude):
  """float64 [B, Q]: each query's nearest distance to its category's kept patches."""
  out = []
  for i in range(len(queries)):
    kept = memory[which[i]][sources[which[i]] != exclude[i]].astype(np.float64)
    out.append(np.sqrt(((queries[i][:, None].astype(np.float64) - kept[None]) ** 2).sum(-1)
                       ).min(1))
  return np.stack(out)


def _search(case, **levels):
  return np.asarray(patch_memory.nearest_distances(*(jnp.asarray(x) for x in case), **levels))


@pytest.mark.parametrize("pixel_levels", [False, True])
def test_blocked_search_of_a_batch_equals_the_brute_force_one(bottle_images, pixel_levels):
  """Float64 brute force to float32 rounding, also with the 8-bit patches multiplied in
  bfloat16 (`pixel_levels`, the evidence's search)."""
  case = _blocked_search_case(bottle_images, interpolated_memory=False)
  got, brute = _search(case, pixel_levels=pixel_levels), _brute_force(*case)
  np.testing.assert_allclose(got, brute, atol=3e-3)  # sqrt of float32 rounding.
  assert np.median(np.abs(got - brute)) < 1e-4


@pytest.mark.parametrize("levels", [{}, {"pixel_levels": True}, {"query_levels": True}])
def test_gray_patches_are_searched_in_one_channel_to_the_same_distances(bottle_images,
                                                                       levels):
  """Gray queries against a gray memory (one channel searched, 3x its squared distance) get
  the colour search's distances; one colour pixel among a batch's queries makes the whole
  search colour, as it must be: one channel of it would not say the distance."""
  gray = _blocked_search_case(bottle_images, "query_levels" in levels, gray=True)
  # pylint: disable-next=protected-access
  assert patch_memory._is_gray(gray[0]) and patch_memory._is_gray(gray[1])  # One channel.
  np.testing.assert_allclose(_search(gray, **levels), _brute_force(*gray), atol=3e-3)
  queries = gray[0].copy()
  queries[1, 5, 3 * 24] = 1.0 - queries[1, 5, 3 * 24]  # Red of the middle pixel: now colour.
  tinted = (queries,) + gray[1:]
  assert not patch_memory._is_gray(queries)  # pylint: disable=protected-access
  np.testing.assert_allclose(_search(tinted, **levels), _brute_force(*tinted), atol=3e-3)
  assert abs(_search(tinted, **levels)[1, 5] - _search(gray, **levels)[1, 5]) > 0.01


def test_split_memory_search_is_as_close_to_exact_as_the_float32_one(bottle_images):
  """8-bit queries against a memory off the 8-bit levels (`query_levels`: the network's patch
  input at inference, its memory in two bfloat16 terms) err from float64 no more than the
  float32 search does."""
  case = _blocked_search_case(bottle_images, interpolated_memory=True)
  brute = _brute_force(*case)
  split_error = np.abs(_search(case, query_levels=True) - brute)
  float32_error = np.abs(_search(case) - brute)
  assert split_error.max() <= float32_error.max()
  assert np.median(split_error) < 1e-4


def test_build_draws_the_memory_from_every_image_and_scales_by_held_out_patches(bottle_images):
  config = _config()
  memory = patch_memory.build(config, {"bottle": bottle_images, "again": iter(bottle_images)},
                              {"bottle": 6, "again": 6})
  assert memory.names == ("bottle", "again")
  assert memory.patches.shape == (2, 2048, 147) and memory.patch_size == 7
  assert set(np.unique(memory.sources[0])) == set(range(6))
  assert np.all(memory.scale > 0.01)
  # Unaugmented, a normal image's own patches are all in reach: its channel is near the floor
  # of [-1, 1]; a pasted square of noise stands far above it.
  plain = patch_memory.build(_config(flip_lr_prob=0.0, flip_ud_prob=0.0, scale_range=(1.0, 1.0),
                                     shift_range=0.0), {"bottle": bottle_images}, {"bottle": 6})
  image = pixels.uint8_to_signed(bottle_images[:1]).copy()
  image[0, 8:16, 8:16] = np.random.default_rng(0).uniform(-1, 1, (8, 8, 3))
  channel = np.asarray(patch_memory.category_channel(jnp.asarray(image), jnp.asarray([0]),
                                                     plain.arrays(), 7))[0, ..., 0]
  assert channel[10:14, 10:14].min() > channel[20:, 20:].max()


def test_coreset_keeps_every_far_point_that_a_random_draw_misses():
  rng = np.random.default_rng(0)
  crowd = rng.normal(0.0, 0.01, (4000, 147))
  outliers = rng.normal(0.0, 1.0, (7, 147)) + 5.0 * np.eye(7, 147)
  candidates = np.concatenate([crowd, outliers]).astype(np.float32)
  picks = np.asarray(patch_memory.coreset_indices(jax.random.PRNGKey(0),
                                                  jnp.asarray(candidates), 8))
  assert len(set(picks.tolist())) == 8
  assert set(range(4000, 4007)) <= set(picks.tolist())


def test_coreset_memory_covers_held_out_real_patches_better_than_a_random_one(bottle_images):
  plain = dict(flip_lr_prob=0.0, flip_ud_prob=0.0, scale_range=(1.0, 1.0), shift_range=0.0)
  built = {selection: patch_memory.build(_config(selection=selection, **plain),
                                         {"bottle": bottle_images[:5]}, {"bottle": 5})
           for selection in patch_memory.SELECTIONS}
  coreset = built["coreset"]
  assert coreset.patches.shape == (1, 2048, 147)
  assert set(np.unique(coreset.sources)) == set(range(5))
  # Every kept patch is one of its source image's own patches (as stored, or augmented: here
  # augmentation is off, so the two views are the same image).
  own = np.asarray(patch_memory.image_patches(pixels.uint8_to_unit(bottle_images[:5]), 7))
  own = own.reshape(5, -1, 147)
  for patch, source in zip(coreset.patches[0][:64], coreset.sources[0][:64]):
    assert np.abs(own[source] - patch).sum(-1).min() < 1e-5
  # The unseen sixth image: the coreset's worst-covered patches are nearer than the random
  # memory's (k-centre minimizes the covering radius).
  queries = patch_memory.image_patches(pixels.uint8_to_unit(bottle_images[5:]), 7)
  queries = queries.reshape(1, -1, 147)
  far = {selection: np.quantile(np.asarray(patch_memory.nearest_distances(
      queries, jnp.asarray(memory.patches), jnp.asarray(memory.sources), jnp.asarray([0]),
      jnp.asarray([-1]))),
      0.99) for selection, memory in built.items()}
  assert far["coreset"] < 0.8 * far["random"], far


def test_the_evidence_memory_keeps_stored_patches_and_covers_unseen_images_better(bottle_images):
  """The evidence memory is a coreset of the stored images' patches: nearer to an unseen
  normal image than the network's memory of augmented patches, at the same size."""
  config = _config()
  config.blaze.evidence_memory, config.blaze.evidence_pool = 2048, 8192
  evidence = patch_memory.build(config, {"bottle": bottle_images[:5]}, {"bottle": 5},
                                evidence=True)
  network = patch_memory.build(config, {"bottle": bottle_images[:5]}, {"bottle": 5})
  assert evidence.patches.shape == network.patches.shape == (1, 2048, 147)
  own = np.asarray(patch_memory.image_patches(pixels.uint8_to_unit(bottle_images[:5]), 7))
  own = own.reshape(5, -1, 147)
  for patch, source in zip(evidence.patches[0][:64], evidence.sources[0][:64]):
    assert np.abs(own[source] - patch).sum(-1).min() < 1e-5  # As stored, never augmented.
  queries = patch_memory.image_patches(pixels.uint8_to_unit(bottle_images[5:]), 7)
  median = {name: np.median(np.asarray(patch_memory.nearest_distances(
      queries.reshape(1, -1, 147), jnp.asarray(memory.patches), jnp.asarray(memory.sources),
      jnp.asarray([0]), jnp.asarray([-1])))) for name, memory in
      (("evidence", evidence), ("network", network))}
  assert median["evidence"] < 0.8 * median["network"], median


def test_an_evidence_memory_of_few_images_keeps_all_their_patches(bottle_images):
  config = _config()
  config.blaze.evidence_memory, config.blaze.evidence_pool = 4096, 8192
  # 3 images of 32x32 px: 3072 patches, 2048 of them held out for the scale, the other 1024
  # all kept, repeated up to the memory's size (a repeat changes no nearest distance).
  memory = patch_memory.build(config, {"bottle": bottle_images[:3]}, {"bottle": 3},
                              evidence=True)
  assert memory.patches.shape == (1, 4096, 147)
  assert len(np.unique(memory.patches[0], axis=0)) <= 1024
  np.testing.assert_array_equal(memory.patches[0, :1024], memory.patches[0, 1024:2048])
  with pytest.raises(ValueError, match="bottle: 2 normal images of 32x32 px give 2048 patches; "
                                       r"the patch memory needs 4096 plus 2048 held out \(lower "
                                       "blaze.evidence_memory"):
    patch_memory.build(config, {"bottle": bottle_images[:2]}, {"bottle": 2}, evidence=True)


def test_too_few_images_and_mixed_sizes_are_refused_naming_the_category(bottle_images):
  with pytest.raises(ValueError, match="bottle: 2 normal images of 32x32 px give 2048 patches; "
                                       "the patch memory needs 2048 plus 2048 held out"):
    patch_memory.build(_config(), {"bottle": bottle_images[:2]}, {"bottle": 2})
  mixed = list(bottle_images[:5]) + [np.zeros((16, 16, 3), np.uint8)]
  with pytest.raises(ValueError, match="bottle: normal image 5 has shape"):
    patch_memory.build(_config(), {"bottle": mixed}, {"bottle": 6})


def test_save_load_and_a_damaged_file(bottle_images, tmp_path):
  memory = patch_memory.build(_config(), {"bottle": bottle_images}, {"bottle": 6})
  memory.save(tmp_path)
  loaded = patch_memory.load(tmp_path)
  assert loaded.names == ("bottle",)
  np.testing.assert_array_equal(loaded.patches, memory.patches)
  (tmp_path / patch_memory.FILE_NAME).write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="patch_memory.npz is not a patch memory file"):
    patch_memory.load(tmp_path)
  with pytest.raises(FileNotFoundError, match="trained with blaze.patch_guide"):
    patch_memory.load(tmp_path / "elsewhere")
  memory.save(tmp_path, patch_memory.EVIDENCE_FILE_NAME)
  assert patch_memory.load(tmp_path, patch_memory.EVIDENCE_FILE_NAME).names == ("bottle",)
  with pytest.raises(FileNotFoundError, match="evidence_memory.npz is missing: the run was "
                                              "trained with blaze.evidence_memory"):
    patch_memory.load(tmp_path / "elsewhere", patch_memory.EVIDENCE_FILE_NAME)


def test_config_checks():
  config = _config()
  assert stage_registry.guide_channels(config) == 4
  config.blaze.reference = False
  with pytest.raises(ValueError, match="blaze.patch_guide needs blaze.reference"):
    stage_registry.check_config(config)
  config = _config(memory=3000)
  with pytest.raises(ValueError, match="blaze.patch_memory must be at most 2048 or a multiple"):
    stage_registry.check_config(config)
  config = _config(selection="nearest")
  with pytest.raises(ValueError, match="blaze.patch_selection must be one of"):
    stage_registry.check_config(config)
  config = _config()
  config.blaze.evidence_trust = True
  config.blaze.evidence_memory = 3000
  with pytest.raises(ValueError, match="blaze.evidence_memory must be 0 \\(none\\), at most 2048 "
                                       "or a multiple"):
    stage_registry.check_config(config)
  config.blaze.evidence_memory, config.blaze.evidence_pool = 4096, 2048
  with pytest.raises(ValueError, match=r"blaze.evidence_pool \(2048\) must be at least "
                                       r"blaze.evidence_memory \(4096\)"):
    stage_registry.check_config(config)
  config = _config(memory=4096, selection="coreset")
  config.blaze.patch_pool = 2048
  with pytest.raises(ValueError, match=r"blaze.patch_pool \(2048\) must be at least "
                                       r"blaze.patch_memory \(4096\)"):
    stage_registry.check_config(config)
