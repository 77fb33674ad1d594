"""The stage registry and every stage's inputs function on hand-made batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from af_jax import stage_registry
from af_jax.training import stage_inputs
from af_jax.training import train
from af_jax.configs import common

SIZE, BATCH = 32, 2


def test_every_registered_stage_has_inputs_and_a_config():
  assert set(stage_inputs.INPUT_FNS) == set(stage_registry.STAGES)
  for name, stage in stage_registry.STAGES.items():
    assert stage.teacher is None or stage.teacher in stage_registry.STAGES
    config = common.get_config(name)
    assert config.stage == name
    for field, value in stage.config_defaults.items():
      group = config
      for part in field.split("."):
        group = group[part]
      assert group == value
  assert common.get_config("flare").model.feature_noise_std == 0.1
  assert common.get_config("boot").augment.local_tps
  assert not common.get_config("blaze").augment.local_tps
  assert stage_registry.serving("generate").name == "flare"
  assert stage_registry.serving("localize").name == "blaze"
  with pytest.raises(ValueError, match="unknown stage 'logical'"):
    common.get_config("logical")


@pytest.mark.parametrize("old", sorted(stage_registry.MOVED_FIELDS))
def test_moved_fields_are_refused_naming_the_new_one(old, tmp_path):
  config = common.get_config("blaze")
  config[old] = 1
  new = stage_registry.MOVED_FIELDS[old]
  with pytest.raises(ValueError, match=f"{old}.*is now '{new}'"):
    train.train(config, str(tmp_path))


class FakeTeacher:
  """A frozen 'generator' whose output is known: a constant image and heatmap; counts calls."""

  def __init__(self):
    self.calls = []

  def apply(self, params, edges, image, *guide, add_noise=False, rngs=None):
    del params, rngs
    self.calls.append(dict(edges=edges, add_noise=add_noise, guide=guide))
    return dict(output=jnp.full_like(image, 0.8), heatmap=jnp.full(edges.shape, 0.3))


def _config(stage, **blaze):
  config = common.get_config(stage)
  config.augment.update(local_tps=False, scale_range=(1.0, 1.0), shift_range=0.0,
                        flip_lr_prob=0.0, flip_ud_prob=0.0)  # The identity: pixels stay put.
  config.manipulate.update(semantic_prob=1.0, edit_op_probs=(1.0, 0.0, 0.0))  # Remove edges.
  config.blaze.update(blaze)
  config.data_facts = dict(edge_method="canny", image_size=SIZE, max_regions=1, datasets=[])
  return config


def _batch():
  """Two 32 px examples: a gradient image, a grid of edges, region 1 = the left half."""
  image = np.broadcast_to(np.linspace(0, 255, SIZE, dtype=np.uint8)[None, :, None],
                          (BATCH, SIZE, SIZE, 3)).copy()
  edges = np.zeros((BATCH, SIZE, SIZE, 1), np.uint8)
  edges[:, ::4] = edges[:, :, ::4] = 255
  regions = np.zeros((BATCH, SIZE, SIZE, 1), np.uint8)
  regions[:, :, :SIZE // 2] = 1
  return dict(image=image, edges=edges, regions=regions)


def _inputs(config, teacher=None, edge_fn=None, region_input=False, **batch_extra):
  inputs_fn = stage_inputs.make_inputs_fn(
      config, teacher and stage_inputs.Teacher(teacher, None, region_input), edge_fn)
  batch = dict(_batch(), **batch_extra)
  return inputs_fn(jax.random.PRNGKey(0), batch, None), stage_inputs.decode_batch(
      batch, config.edge_threshold)


def _check_ranges(out):
  for name in ("edges", "heatmap_target", "region_mask"):
    assert getattr(out, name).shape == (BATCH, SIZE, SIZE, 1)
    assert 0 <= float(getattr(out, name).min()) <= float(getattr(out, name).max()) <= 1
  for name in ("image", "target"):
    assert getattr(out, name).shape == (BATCH, SIZE, SIZE, 3)
    assert -1 <= float(getattr(out, name).min()) <= float(getattr(out, name).max()) <= 1
  assert set(np.unique(out.edges)) <= {0.0, 1.0}


def test_boot_inputs_rebuild_the_image_from_its_edges_without_a_teacher():
  out, data = _inputs(_config("boot"))
  _check_ranges(out)
  np.testing.assert_allclose(out.target, data["image"], atol=1e-5)
  np.testing.assert_allclose(out.image, data["image"], atol=1e-5)
  np.testing.assert_array_equal(out.edges, data["edges"])
  assert not np.asarray(out.heatmap_target).any() and not np.asarray(out.region_mask).any()


def test_flare_inputs_edit_edges_in_the_region_and_the_teacher_renders_the_target():
  teacher = FakeTeacher()
  out, data = _inputs(_config("flare"), teacher)
  _check_ranges(out)
  assert len(teacher.calls) == 1 and not teacher.calls[0]["add_noise"]
  np.testing.assert_array_equal(teacher.calls[0]["edges"], out.edges * 2 - 1)
  np.testing.assert_allclose(out.target, 0.8)
  np.testing.assert_allclose(out.image, data["image"], atol=1e-5)
  region = np.asarray(out.region_mask) > 0
  assert region.any() and not region[:, :, SIZE // 2:].any()  # Inside region 1 only.
  np.testing.assert_array_equal(out.heatmap_target, out.region_mask)
  np.testing.assert_array_equal(np.asarray(out.edges)[~region], np.asarray(data["edges"])[~region])
  assert not np.asarray(out.edges)[region].any()  # The edit removed the region's edges.


def test_flare_target_in_region_keeps_the_image_outside_the_edited_region():
  config = _config("flare")
  config.flare.target = "boot_in_region"
  out, data = _inputs(config, FakeTeacher())
  region = np.asarray(out.region_mask)[..., 0] > 0
  np.testing.assert_allclose(np.asarray(out.target)[region], 0.8)
  np.testing.assert_allclose(np.asarray(out.target)[~region], np.asarray(data["image"])[~region],
                             atol=1e-5)
  config.flare.target = "everywhere"
  with pytest.raises(ValueError, match="flare.target must be one of"):
    _inputs(config, FakeTeacher())


def test_blaze_synthetic_examples_are_pasted_anomalies_with_their_own_targets():
  teacher = FakeTeacher()
  out, data = _inputs(_config("blaze", synthetic_fraction=1.0, heatmap_target="change_in_region",
                              change_scale=0.5), teacher)
  _check_ranges(out)
  assert len(teacher.calls) == 1  # Flare still runs (one program for every mix).
  mask = np.asarray(out.region_mask)[..., 0] > 0
  assert mask.any() and not mask.all()
  image, normal = np.asarray(out.image), np.asarray(data["image"])
  np.testing.assert_allclose(image[~mask], normal[~mask], atol=1e-5)  # No Flare output at all.
  assert not np.allclose(image, 0.8)
  change = np.abs(image - normal).mean(-1)
  np.testing.assert_allclose(np.asarray(out.heatmap_target)[..., 0],
                             np.clip(change / 0.5, 0, 1) * mask, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(out.edges)[~mask], np.asarray(data["edges"])[~mask])
  np.testing.assert_allclose(out.target, normal, atol=1e-5)


@pytest.mark.parametrize("target", sorted(stage_inputs.BLAZE_HEATMAP_TARGETS))
def test_blaze_heatmap_targets(target):
  teacher = FakeTeacher()
  out, data = _inputs(_config("blaze", heatmap_target=target, change_scale=0.5), teacher)
  _check_ranges(out)
  assert len(teacher.calls) == 1 and teacher.calls[0]["add_noise"]
  np.testing.assert_allclose(out.target, data["image"], atol=1e-5)  # Repair to the normal.
  region = np.asarray(out.region_mask)
  inside, outside = region[..., 0] > 0, region[..., 0] == 0
  heat = np.asarray(out.heatmap_target)[..., 0]
  change = np.abs(0.8 - np.asarray(data["image"])).mean(-1)
  expected = {"flare": np.full_like(heat, 0.3),
              "flare_in_region": 0.3 * region[..., 0],
              "region": region[..., 0],
              "change_in_region": np.where(inside, np.clip(change / 0.5, 0, 1), 0)}[target]
  np.testing.assert_allclose(heat, expected, atol=1e-5)
  image = np.asarray(out.image)
  np.testing.assert_allclose(image[inside], 0.8)  # Flare's anomaly where it edited ...
  if target == "change_in_region":  # ... and, pasted into the region only, the normal elsewhere.
    np.testing.assert_allclose(image[outside], np.asarray(data["image"])[outside], atol=1e-5)
  else:
    np.testing.assert_allclose(image[outside], 0.8)


def test_blaze_normal_examples_and_reextracted_edges():
  teacher = FakeTeacher()
  out, data = _inputs(_config("blaze", normal_fraction=1.0), teacher)
  np.testing.assert_allclose(out.image, data["image"], atol=1e-5)
  np.testing.assert_array_equal(out.edges, data["edges"])
  assert not np.asarray(out.heatmap_target).any() and not np.asarray(out.region_mask).any()

  edge_fn = lambda images: (images[..., :1] > 0.5).astype(jnp.float32)  # 1 where Flare drew.
  with pytest.raises(ValueError, match="PiDiNet edge function"):
    _inputs(_config("blaze", reextract_edges=True), FakeTeacher())
  out, _ = _inputs(_config("blaze", reextract_edges=True), FakeTeacher(), edge_fn)
  np.testing.assert_array_equal(out.edges, edge_fn(out.image))


def test_stages_with_a_teacher_refuse_to_run_without_one():
  for name, stage in stage_registry.STAGES.items():
    if stage.teacher:
      with pytest.raises(ValueError, match="needs a teacher"):
        stage_inputs.make_inputs_fn(_config(name))
  with pytest.raises(ValueError, match="heatmap_target must be one of"):
    stage_inputs.make_inputs_fn(_config("blaze", heatmap_target="perlin"), stage_inputs.Teacher(None, None))


def test_flare_region_input_is_its_guide_and_a_region_teacher_is_shown_the_region():
  config = _config("flare")
  out, _ = _inputs(config, FakeTeacher())
  assert out.guide.shape == (BATCH, SIZE, SIZE, 0)  # The paper: no extra input.
  config.flare.region_input = True
  out, _ = _inputs(config, FakeTeacher())
  np.testing.assert_array_equal(out.guide, np.asarray(out.region_mask) * 2 - 1)

  teacher = FakeTeacher()  # Blaze learning from a Flare that takes the region.
  out, _ = _inputs(_config("blaze", heatmap_target="region"), teacher, region_input=True)
  (guide,), = [call["guide"] for call in teacher.calls]
  np.testing.assert_array_equal(guide, np.asarray(out.region_mask) * 2 - 1)


def test_blaze_reference_guide_compares_the_network_image_with_its_moved_reference():
  from af_jax.evidence import reference  # pylint: disable=g-import-not-at-top
  mean = np.random.default_rng(0).uniform(0, 1, (BATCH, SIZE, SIZE, 3)).astype(np.float32)
  mean_std = np.concatenate([mean, np.full_like(mean, 0.1)], -1)
  config = _config("blaze", reference=True, reference_eps=0.02, synthetic_fraction=0.5)
  out, _ = _inputs(config, FakeTeacher(), reference=mean_std)
  np.testing.assert_allclose(out.guide, reference.network_channels(out.image, mean_std, 0.02),
                             atol=1e-5)
  config.augment.flip_lr_prob = 1.0  # Every example mirrored: the reference must follow.
  out, _ = _inputs(config, FakeTeacher(), reference=mean_std)
  np.testing.assert_allclose(
      out.guide, reference.network_channels(out.image, mean_std[:, :, ::-1], 0.02), atol=1e-5)
