"""Generator structure, outputs, fusion, noise, and the analytic FLOP counts of all networks."""

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from af_jax.models.discriminator import MultiscaleDiscriminator
from af_jax.models import flops, layers
from af_jax.models.generator import GlobalGenerator, fuse
from af_jax.models.vgg import VGG19Features
from conftest import bottle_images_and_edges

TINY = dict(ngf=8, n_downsampling=2, n_blocks=2)


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _random_variables(model, *inputs, scale=0.02, seed=0):
  """N(0, scale) for every variable, without paying for the threefry compile of `model.init`."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), *inputs)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, scale, s.shape), s.dtype), shapes)


@pytest.fixture(scope="module")
def bottle_batch(bottle_dir):
  """Two real bottle images at 32 px in [-1, 1] and their Canny edges in {-1, 1}."""
  return bottle_images_and_edges(bottle_dir, ("000.png", "001.png"))


def test_paper_config_has_188717380_parameters_and_two_identical_decoders():
  edges = jax.ShapeDtypeStruct((1, 64, 64, 1), jnp.float32)
  image = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  params = jax.eval_shape(GlobalGenerator().init, jax.random.key(0), edges, image)["params"]
  assert _count(params) == 188_717_380
  assert set(params) == {"encoder", "texture_decoder", "heatmap_decoder"}
  texture = jax.tree.map(lambda a: a.shape, params["texture_decoder"])
  heatmap = jax.tree.map(lambda a: a.shape, params["heatmap_decoder"])
  assert texture["conv_out"]["kernel"] == (7, 7, 64, 3)
  assert heatmap["conv_out"]["kernel"] == (7, 7, 64, 1)
  del texture["conv_out"], heatmap["conv_out"]
  assert texture == heatmap


def test_outputs_have_the_documented_shapes_ranges_and_fusion(bottle_batch):
  edges, image = bottle_batch
  model = GlobalGenerator(**TINY)
  # Large random weights push the tanh/sigmoid towards saturation, where range bugs show.
  variables = _random_variables(model, edges, image, scale=1.0)
  out = jax.jit(model.apply)(variables, edges, image)
  assert out["output"].shape == out["texture"].shape == (2, 32, 32, 3)
  assert out["heatmap"].shape == (2, 32, 32, 1)
  for key in out:
    assert out[key].dtype == jnp.float32
  heat = np.asarray(out["heatmap"])
  assert heat.min() >= 0.0 and heat.max() <= 1.0 and heat.std() > 0.05
  assert np.abs(np.asarray(out["texture"])).max() <= 1.0
  assert np.abs(np.asarray(out["output"])).max() <= 1.0
  np.testing.assert_allclose(out["output"], fuse(image, out["texture"], out["heatmap"]), atol=1e-6)


def test_fusion_takes_the_image_where_h_is_0_and_the_texture_where_h_is_1(bottle_batch):
  _, image = bottle_batch
  texture = -image[:, ::-1]
  zeros, ones = jnp.zeros(image.shape[:3] + (1,)), jnp.ones(image.shape[:3] + (1,))
  np.testing.assert_array_equal(fuse(image, texture, zeros), image)
  np.testing.assert_array_equal(fuse(image, texture, ones), texture)
  np.testing.assert_allclose(fuse(image, texture, 0.25 * ones), 0.75 * image + 0.25 * texture,
                             atol=1e-6)


def test_bottleneck_noise_only_when_asked_and_driven_by_the_noise_rng(bottle_batch):
  edges, image = bottle_batch
  model = GlobalGenerator(**TINY, feature_noise_std=1.0)
  variables = _random_variables(model, edges, image)
  apply = jax.jit(model.apply, static_argnames="add_noise")
  plain = apply(variables, edges, image)["output"]
  np.testing.assert_array_equal(
      apply(variables, edges, image, rngs={"noise": jax.random.key(5)})["output"], plain)
  noisy_a = apply(variables, edges, image, add_noise=True, rngs={"noise": jax.random.key(1)})
  noisy_a2 = apply(variables, edges, image, add_noise=True, rngs={"noise": jax.random.key(1)})
  noisy_b = apply(variables, edges, image, add_noise=True, rngs={"noise": jax.random.key(2)})
  np.testing.assert_array_equal(noisy_a["output"], noisy_a2["output"])
  assert np.abs(np.asarray(noisy_a["output"] - noisy_b["output"])).max() > 1e-3
  assert np.abs(np.asarray(noisy_a["output"] - plain)).max() > 1e-3
  silent = jax.jit(GlobalGenerator(**TINY).apply, static_argnames="add_noise")(
      variables, edges, image, add_noise=True)["output"]
  np.testing.assert_allclose(silent, plain, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_outputs(bottle_batch):
  edges, image = bottle_batch
  model = GlobalGenerator(**TINY, dtype=jnp.bfloat16)
  variables = _random_variables(model, edges, image)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  out = jax.jit(model.apply)(variables, edges, image)
  reference = jax.jit(GlobalGenerator(**TINY).apply)(variables, edges, image)
  for key in out:
    assert out[key].dtype == jnp.float32
    np.testing.assert_allclose(out[key], reference[key], atol=0.1)


def test_mismatched_inputs_are_rejected_with_their_shapes():
  with pytest.raises(ValueError, match=r"edges \(1, 32, 32, 3\)"):
    GlobalGenerator(**TINY).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 32, 32, 3)))


def _traced_conv_flops(module: nn.Module, *shapes) -> int:
  """2 x output pixels x kernel size of every conv the module really runs (batch 1, abstract)."""
  total = []

  def count(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    is_conv = isinstance(context.module, (nn.Conv, layers.Conv, layers.ConvTransposeX2))
    if is_conv and context.method_name == "__call__":
      kernel = context.module.variables["params"]["kernel"]
      total.append(2 * int(np.prod(out.shape[1:-1])) * int(np.prod(kernel.shape)))
    return out

  inputs = [jax.ShapeDtypeStruct((1, *s), jnp.float32) for s in shapes]
  with nn.intercept_methods(count):
    jax.eval_shape(module.init, jax.random.key(0), *inputs)
  return sum(total)


def test_analytic_flops_match_the_convolutions_the_models_run():
  assert flops.generator_flops(256) == _traced_conv_flops(GlobalGenerator(), (256, 256, 1), (256, 256, 3))
  assert flops.generator_flops((64, 96), **TINY) == _traced_conv_flops(
      GlobalGenerator(**TINY), (64, 96, 1), (64, 96, 3))
  assert flops.discriminator_flops(256) == _traced_conv_flops(MultiscaleDiscriminator(),
                                                              (256, 256, 7))
  assert flops.vgg_flops(256) == _traced_conv_flops(VGG19Features(), (256, 256, 3))


def test_paper_config_flops_are_near_the_reference_figures():
  assert flops.generator_flops(256) == pytest.approx(177e9, rel=0.01)
  assert flops.train_step_flops(256) == pytest.approx(815e9, rel=0.01)
  assert flops.train_step_flops(256, use_vgg=False) == (
      flops.train_step_flops(256) - 4 * flops.vgg_flops(256))
