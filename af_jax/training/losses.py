"""Training losses, with pix2pixHD's defaults and weighting (as used by the paper via DeepSIM).

Discriminator outputs are `MultiscaleDiscriminator` results: per scale, the list of layer outputs
whose last entry is the patch score. Every loss is computed in float32 and returns a float32 scalar;
means are over all elements, like PyTorch's `MSELoss` / `L1Loss`.

- LSGAN: MSE of the patch scores to 1 (real) or 0 (fake), summed over scales; the discriminator
  loss is 0.5 * (fake + real).
- Feature matching: L1 between fake and (detached) real intermediate features of every scale,
  each term weighted 1/num_scales x 4/(n_layers + 1) x `weight`.
- Perceptual: L1 between VGG19 relu1_1..relu5_1 features, weighted 1/32, 1/16, 1/8, 1/4, 1,
  times `weight`; the target's features are detached.
- Heatmap: MSE x `weight` (paper Eq. 5-7).
"""

import jax
import jax.numpy as jnp

from af_jax.models.vgg import VGG19Features

VGG_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)

DiscriminatorOutputs = list[list[jax.Array]]


def _mse(a: jax.Array, b) -> jax.Array:
  return jnp.mean(jnp.square(a.astype(jnp.float32) - b))


def _l1(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))


def lsgan_generator_loss(fake_outputs: DiscriminatorOutputs) -> jax.Array:
  """Generator side of LSGAN: sum over scales of mean((D(fake) - 1)^2)."""
  return sum(_mse(scale[-1], 1.0) for scale in fake_outputs)


def lsgan_discriminator_loss(real_outputs: DiscriminatorOutputs,
                             fake_outputs: DiscriminatorOutputs) -> jax.Array:
  """0.5 * (sum_scales mean(D(fake)^2) + sum_scales mean((D(real) - 1)^2))."""
  fake = sum(_mse(scale[-1], 0.0) for scale in fake_outputs)
  real = sum(_mse(scale[-1], 1.0) for scale in real_outputs)
  return 0.5 * (fake + real)


def feature_matching_loss(fake_outputs: DiscriminatorOutputs, real_outputs: DiscriminatorOutputs,
                          weight: float = 10.0) -> jax.Array:
  """pix2pixHD's GAN feature loss over all outputs but the patch score; `real` is detached.

  With n_layers + 2 outputs per scale, every term is weighted
  (1 / num_scales) * (4 / (n_layers + 1)) * weight.
  """
  num_scales = len(fake_outputs)
  loss = jnp.float32(0.0)
  for fake, real in zip(fake_outputs, real_outputs, strict=True):
    term_weight = weight * (1.0 / num_scales) * (4.0 / (len(fake) - 1))
    for f, r in zip(fake[:-1], real[:-1], strict=True):
      loss += term_weight * _l1(f, jax.lax.stop_gradient(r))
  return loss


def vgg_enabled(loss_config) -> bool:
  """Whether the VGG perceptual term is on: weighted above 0 and given VGG19 weights (without
  them it is off, never computed with random weights)."""
  return loss_config.vgg > 0 and bool(loss_config.vgg_weights)


def perceptual_loss(vgg_params, x: jax.Array, y: jax.Array, weight: float = 10.0,
                    dtype=jnp.float32) -> jax.Array:
  """VGG19 L1 loss between `x` (trained towards) and `y` (the target, detached), both in [-1, 1].

  `vgg_params` is the tree from `af_jax.models.vgg.load_vgg19_params`. The two images go through
  VGG separately so that no backward pass is spent on the target.
  """
  vgg = VGG19Features(dtype=dtype)
  x_features = vgg.apply({"params": vgg_params}, x)
  y_features = vgg.apply({"params": vgg_params}, jax.lax.stop_gradient(y))
  loss = sum(w * _l1(fx, jax.lax.stop_gradient(fy))
             for w, fx, fy in zip(VGG_LAYER_WEIGHTS, x_features, y_features, strict=True))
  return weight * loss


HEATMAP_LOSSES = ("l2", "bce")


def heatmap_loss(pred: jax.Array, target: jax.Array, weight: float = 10.0,
                 kind: str = "l2") -> jax.Array:
  """`weight` x the mean 'l2' (squared error, the paper) or 'bce' (binary cross-entropy) of the
  predicted heatmap (a sigmoid's output) against the target in [0, 1].

  The squared error of a sigmoid fades as the prediction nears 0 or 1 (its gradient carries
  sigmoid'), so a heatmap that should be 0 almost everywhere settles at a few percent; the
  cross-entropy keeps pushing it at the rate of the error itself.
  """
  target = target.astype(jnp.float32)
  if kind == "l2":
    return weight * _mse(pred, target)
  if kind == "bce":
    p = jnp.clip(pred.astype(jnp.float32), 1e-6, 1.0 - 1e-6)
    return weight * jnp.mean(-(target * jnp.log(p) + (1.0 - target) * jnp.log1p(-p)))
  raise ValueError(f"heatmap loss kind must be one of {HEATMAP_LOSSES}, got {kind!r}")
