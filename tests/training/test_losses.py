"""Losses on hand-made inputs, the VGG perceptual loss, a tiny GAN that learns to reconstruct."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from af_jax.models.discriminator import MultiscaleDiscriminator
from af_jax.models.generator import GlobalGenerator
from af_jax.models.vgg import VGG19Features
from af_jax.training import losses
from conftest import bottle_images_and_edges


def _a(values, dtype=jnp.float32):
  """A [1, h, w, 1] array from a nested list of rows."""
  return jnp.asarray(values, dtype)[None, ..., None]


def _random_variables(model, *inputs, seed=0):
  """He-scaled normal kernels and small biases for every layer (no slow threefry `init`)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), *inputs)

  def draw(s):
    fan_in = np.prod(s.shape[:-1]) if len(s.shape) > 1 else 1
    scale = np.sqrt(2.0 / fan_in) if len(s.shape) > 1 else 0.01
    return jnp.asarray(rng.normal(0, scale, s.shape), s.dtype)
  return jax.tree.map(draw, shapes)


@pytest.fixture(scope="module")
def bottles(bottle_dir):
  """Three real bottle images at 32 px in [-1, 1], and their Canny edges in {-1, 1}."""
  return bottle_images_and_edges(bottle_dir, ("000.png", "050.png", "100.png"))


def test_lsgan_losses_on_hand_made_patch_scores():
  feature = jnp.ones((1, 3, 3, 2)) * 7.0  # intermediate outputs must not enter the GAN loss
  fake = [[feature, _a([[0.5, 1.0], [1.5, 2.0]])], [feature, _a([[0.0, 0.0]])]]
  real = [[feature, _a([[1.0, 1.0], [1.0, 0.0]])], [feature, _a([[3.0, 1.0]])]]
  # generator: mean((s - 1)^2) per scale: (0.25 + 0 + 0.25 + 1) / 4 + (1 + 1) / 2
  assert float(losses.lsgan_generator_loss(fake)) == pytest.approx(0.375 + 1.0)
  # fake: (0.25 + 1 + 2.25 + 4) / 4 + 0 = 1.875; real: 1 / 4 + (4 + 0) / 2 = 2.25
  assert float(losses.lsgan_discriminator_loss(real, fake)) == pytest.approx(
      0.5 * (1.875 + 2.25))
  bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), fake)
  assert losses.lsgan_generator_loss(bf16).dtype == jnp.float32


def test_feature_matching_weights_and_detaches_the_real_features():
  # n_layers = 1: three outputs per scale, the last (patch score) is not matched.
  fake = [[_a([[1.0, 2.0], [3.0, 4.0]]), _a([[0.0, 0.0]]), _a([[100.0]])],
          [_a([[2.0]]), _a([[-1.0, 1.0]]), _a([[-50.0]])]]
  real = [[_a([[0.5, 1.0], [1.0, 1.0]]), _a([[0.5, -0.5]]), _a([[0.0]])],
          [_a([[0.0]]), _a([[-1.0, 1.0]]), _a([[0.0]])]]
  # L1 terms 1.625, 0.5, 2, 0, each x (1 / 2 scales) x (4 / (1 + 1)) x 10
  assert float(losses.feature_matching_loss(fake, real)) == pytest.approx(41.25)
  assert float(losses.feature_matching_loss(fake, real, weight=1.0)) == pytest.approx(4.125)
  grad_fake, grad_real = jax.grad(losses.feature_matching_loss, argnums=(0, 1))(fake, real)
  assert all(float(jnp.abs(g).sum()) == 0.0 for g in jax.tree.leaves(grad_real))
  np.testing.assert_allclose(grad_fake[0][0], _a([[2.5, 2.5], [2.5, 2.5]]))  # 10 * sign / 4
  np.testing.assert_array_equal(grad_fake[0][2], 0.0)


def test_heatmap_loss_is_mse_times_weight():
  pred = _a([[0.0, 0.5], [1.0, 1.0]], jnp.bfloat16)
  target = _a([[0.0, 0.0], [0.0, 1.0]])
  loss = losses.heatmap_loss(pred, target)
  assert loss.dtype == jnp.float32
  assert float(loss) == pytest.approx(10.0 * (0.25 + 1.0) / 4)
  assert float(losses.heatmap_loss(pred, target, weight=1.0)) == pytest.approx(0.3125)


def test_bce_heatmap_loss_is_cross_entropy_and_keeps_pushing_near_zero():
  pred, target = _a([[0.2, 0.9]]), _a([[0.0, 1.0]])
  expected = -(np.log(0.8) + np.log(0.9)) / 2
  assert float(losses.heatmap_loss(pred, target, 1.0, "bce")) == pytest.approx(expected, rel=1e-5)
  # At a prediction of 0.03 for a target of 0, L2's gradient has all but vanished; BCE's has not.
  grad = lambda kind: jax.grad(lambda p: losses.heatmap_loss(
      jax.nn.sigmoid(p), jnp.zeros(()), 1.0, kind))(jnp.log(0.03 / 0.97))
  assert float(grad("bce")) > 10 * float(grad("l2")) > 0
  with pytest.raises(ValueError, match="must be one of"):
    losses.heatmap_loss(pred, target, kind="l1")


@pytest.fixture(scope="module")
def vgg_params():
  return _random_variables(VGG19Features(), jnp.zeros((1, 32, 32, 3)))["params"]


def test_perceptual_loss_weights_the_five_vgg_layers_and_detaches_the_target(bottles, vgg_params):
  _, images = bottles
  x, y = images[:2], images[1:]
  loss_and_grads = jax.jit(jax.value_and_grad(losses.perceptual_loss, argnums=(1, 2)))
  loss, (grad_x, grad_y) = loss_and_grads(vgg_params, x, y)
  fx = VGG19Features().apply({"params": vgg_params}, x)
  fy = VGG19Features().apply({"params": vgg_params}, y)
  by_hand = sum(w * np.abs(np.asarray(a) - np.asarray(b)).mean()
                for w, a, b in zip([1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0], fx, fy))
  assert loss.dtype == jnp.float32
  assert float(loss) == pytest.approx(10.0 * by_hand, rel=1e-4)
  assert float(loss) > 0 and float(jnp.abs(grad_x).max()) > 0
  np.testing.assert_array_equal(grad_y, 0.0)
  assert float(losses.perceptual_loss(vgg_params, x, x)) == 0.0
  low = losses.perceptual_loss(vgg_params, x, y, weight=1.0, dtype=jnp.bfloat16)
  assert low.dtype == jnp.float32 and float(low) == pytest.approx(by_hand, rel=0.05)


def test_tiny_gan_reduces_its_reconstruction_loss(bottles):
  edges, images = bottles
  edges, images = edges[:2], images[:2]
  generator = GlobalGenerator(ngf=8, n_downsampling=2, n_blocks=2)
  discriminator = MultiscaleDiscriminator(ndf=8)
  g_params = _random_variables(generator, edges, images, seed=1)["params"]
  d_params = _random_variables(discriminator, jnp.zeros((2, 32, 32, 7)), seed=2)["params"]
  optimizer = optax.adam(2e-4, b1=0.5, b2=0.999)
  g_opt, d_opt = optimizer.init(g_params), optimizer.init(d_params)

  def discriminate(d_params, image):
    return discriminator.apply({"params": d_params}, jnp.concatenate([edges, images, image], -1))

  def g_loss(g_params, d_params):
    output = generator.apply({"params": g_params}, edges, images)["output"]
    fake, real = discriminate(d_params, output), discriminate(d_params, images)
    recon = jnp.mean(jnp.abs(output - images))
    gan = losses.lsgan_generator_loss(fake) + losses.feature_matching_loss(fake, real)
    return gan + 10.0 * recon, (recon, output)

  def d_loss(d_params, fake_image):
    return losses.lsgan_discriminator_loss(discriminate(d_params, images),
                                           discriminate(d_params, fake_image))

  @jax.jit
  def step(g_params, d_params, g_opt, d_opt):
    (_, (recon, output)), g_grads = jax.value_and_grad(g_loss, has_aux=True)(g_params, d_params)
    d_grads = jax.grad(d_loss)(d_params, jax.lax.stop_gradient(output))
    g_updates, g_opt = optimizer.update(g_grads, g_opt)
    d_updates, d_opt = optimizer.update(d_grads, d_opt)
    return (optax.apply_updates(g_params, g_updates), optax.apply_updates(d_params, d_updates),
            g_opt, d_opt, recon)

  # Compiling dominates this test on CPU; LLVM optimisation buys nothing for 15 tiny steps.
  step = step.lower(g_params, d_params, g_opt, d_opt).compile(
      compiler_options={"xla_backend_optimization_level": 0})
  recons = []
  for _ in range(15):
    g_params, d_params, g_opt, d_opt, recon = step(g_params, d_params, g_opt, d_opt)
    recons.append(float(recon))
  assert np.isfinite(recons).all()
  assert recons[-1] < 0.8 * recons[0], recons
