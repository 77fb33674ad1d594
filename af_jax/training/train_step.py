"""The jitted training step shared by all stages: G and D updates with pix2pixHD losses.

One call does: stage inputs (augmentation, edge editing, teacher forward) -> generator
forward -> discriminator on real and fake -> generator loss (LSGAN + feature matching
+ VGG + heatmap L2 [+ L1]) and its update -> discriminator loss on the detached fake and
its update. Losses and parameters are float32; activations use `model.compute_dtype`.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from af_jax.models import build
from af_jax.models.generator import fuse
from af_jax import pixels
from af_jax import stage_registry
from af_jax.training import losses
from af_jax.training import stage_inputs


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  generator: Any        # Generator params ({'params': ...}).
  discriminator: Any    # Discriminator params.
  g_opt: Any
  d_opt: Any
  rng: jax.Array        # Raw uint32 PRNG key (checkpointable).

  def train_part(self) -> dict:
    """Everything but the generator params: what the `train` checkpoint item holds."""
    return dict(step=self.step, discriminator=self.discriminator, g_opt=self.g_opt,
                d_opt=self.d_opt, rng=self.rng)

  @classmethod
  def from_parts(cls, generator, train: dict) -> "TrainState":
    return cls(generator=generator, **train)


def learning_rate_schedule(optim_config, total_steps: int):
  """Constant for `constant_fraction` of training, then linear decay to 0 (pix2pixHD style)."""
  lr = optim_config.learning_rate
  constant_steps = int(total_steps * optim_config.constant_fraction)
  decay = optax.linear_schedule(lr, 0.0, max(total_steps - constant_steps, 1))
  return optax.join_schedules([optax.constant_schedule(lr), decay], [constant_steps])


def make_optimizer(optim_config, schedule) -> optax.GradientTransformation:
  return optax.adam(schedule, b1=optim_config.b1, b2=optim_config.b2)


def init_state(key, config, generator, discriminator, tx) -> TrainState:
  """Fresh parameters (N(0, 0.02) convs) and optimizer states at step 0."""
  k_init, k_state = jax.random.split(key)
  # Parameter init draws through the 'rbg' PRNG: the same N(0, 0.02) draws, but XLA compiles
  # one RngBitGenerator per parameter instead of an unrolled threefry hash (5x faster start).
  k_g, k_d = jax.random.split(jax.random.wrap_key_data(
      jnp.concatenate([k_init, k_init ^ 0x5BD1E995]).astype(jnp.uint32), impl="rbg"))
  size = config.data.image_size
  g_params = build.init_generator(k_g, generator, size, stage_registry.guide_channels(config))
  d_params = build.init_discriminator(k_d, discriminator, size)
  return TrainState(step=jnp.zeros((), jnp.int32), generator=g_params, discriminator=d_params,
                    g_opt=tx.init(g_params), d_opt=tx.init(d_params), rng=k_state)


def _generate(generator, params, inputs: stage_inputs.StageInputs, key, add_noise: bool):
  """The generator's outputs for a stage's inputs (its guide channels only when it has some)."""
  guide = inputs.guide if inputs.guide.shape[-1] else None
  return generator.apply(params, pixels.unit_to_signed(inputs.edges), inputs.image, guide,
                         add_noise=add_noise, rngs={"noise": key})


def _discriminator_input(inputs: stage_inputs.StageInputs, image):
  return jnp.concatenate([pixels.unit_to_signed(inputs.edges), inputs.image, image], axis=-1)


def make_train_step(config, generator, discriminator, tx, schedule, inputs_fn):
  """Returns `train_step(state, batch, frozen, vgg_params) -> (state, metrics)` (`frozen`: a
  `stage_inputs.Frozen` or None)."""
  w = config.loss
  use_heatmap = stage_registry.get(config.stage).heatmap_loss
  use_vgg = losses.vgg_enabled(w)
  noise = config.model.feature_noise_std > 0

  def generator_losses(g_params, d_params, inputs, vgg_params, key):
    out = _generate(generator, g_params, inputs, key, noise)
    fake = out["output"]
    if not w.image_terms_train_heatmap:  # H then learns where, from its own target alone.
      fake = fuse(inputs.image, out["texture"], jax.lax.stop_gradient(out["heatmap"]))
    d_fake = discriminator.apply(d_params, _discriminator_input(inputs, fake))
    d_real = jax.lax.stop_gradient(
        discriminator.apply(d_params, _discriminator_input(inputs, inputs.target)))
    terms = dict(
        g_gan=w.gan * losses.lsgan_generator_loss(d_fake),
        g_feature_matching=losses.feature_matching_loss(d_fake, d_real, weight=w.feature_matching))
    if use_vgg:
      terms["g_vgg"] = losses.perceptual_loss(vgg_params, fake, inputs.target, weight=w.vgg,
                                              dtype=build.compute_dtype(config.model))
    if use_heatmap:
      terms["g_heatmap"] = losses.heatmap_loss(out["heatmap"], inputs.heatmap_target,
                                               weight=w.heatmap, kind=w.heatmap_kind)
    if w.l1 > 0:
      terms["g_l1"] = w.l1 * jnp.mean(jnp.abs(fake - inputs.target))
    return sum(terms.values()), (terms, fake)

  def discriminator_loss(d_params, inputs, fake):
    d_fake = discriminator.apply(d_params, _discriminator_input(inputs, fake))
    d_real = discriminator.apply(d_params, _discriminator_input(inputs, inputs.target))
    return losses.lsgan_discriminator_loss(d_real, d_fake)

  def train_step(state: TrainState, batch, frozen=None, vgg_params=None):
    rng, k_inputs, k_noise = jax.random.split(state.rng, 3)
    inputs = inputs_fn(k_inputs, batch, frozen)

    (g_loss, (terms, fake)), g_grads = jax.value_and_grad(generator_losses, has_aux=True)(
        state.generator, state.discriminator, inputs, vgg_params, k_noise)
    g_updates, g_opt = tx.update(g_grads, state.g_opt, state.generator)
    generator_params = optax.apply_updates(state.generator, g_updates)

    d_loss, d_grads = jax.value_and_grad(discriminator_loss)(
        state.discriminator, inputs, jax.lax.stop_gradient(fake))
    d_updates, d_opt = tx.update(d_grads, state.d_opt, state.discriminator)
    discriminator_params = optax.apply_updates(state.discriminator, d_updates)

    metrics = dict(terms, g_loss=g_loss, d_loss=d_loss, learning_rate=schedule(state.step))
    new_state = TrainState(step=state.step + 1, generator=generator_params,
                           discriminator=discriminator_params, g_opt=g_opt, d_opt=d_opt,
                           rng=rng)
    return new_state, metrics

  return train_step


def make_preview_fn(config, generator, inputs_fn):
  """`preview(state, batch, frozen, key) -> dict of images` for TensorBoard grids."""
  noise = config.model.feature_noise_std > 0

  def preview(state, batch, frozen, key):
    k_inputs, k_noise = jax.random.split(key)
    inputs = inputs_fn(k_inputs, batch, frozen)
    out = _generate(generator, state.generator, inputs, k_noise, noise)
    return dict(edges=inputs.edges, reference=inputs.image, target=inputs.target,
                output=out["output"], heatmap=out["heatmap"], region_mask=inputs.region_mask)

  return preview
