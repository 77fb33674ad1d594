"""The networks of a run, built from its `config.model`, and their parameter shapes.

Training, teachers, inference, benchmarks and tests all build the generator and the
discriminator here, so one model config always means one network and one parameter tree.

The generator takes an edge map [B, S, S, 1], an image [B, S, S, 3] and, for a Blaze run with
`blaze.reference`, the reference deviation map [B, S, S, 3] (or, for a Flare run with
`flare.region_input`, the edited region [B, S, S, 1]: `stage_registry.guide_channels`); the
discriminator sees edges and image concatenated with a real or generated image
(`DISCRIMINATOR_CHANNELS`).
"""

import jax
import jax.numpy as jnp

from af_jax.models.discriminator import MultiscaleDiscriminator
from af_jax.models.generator import GlobalGenerator

EDGE_CHANNELS, IMAGE_CHANNELS = 1, 3
# concat(edges, reference image, real or generated image), as pix2pixHD conditions its D.
DISCRIMINATOR_CHANNELS = EDGE_CHANNELS + 2 * IMAGE_CHANNELS


def compute_dtype(model_config) -> jnp.dtype:
  """The dtype layers compute in (`model.compute_dtype`); parameters stay float32."""
  return jnp.dtype(model_config.compute_dtype)


def generator(model_config, dtype=None) -> GlobalGenerator:
  """The generator of `model_config`, computing in `dtype` (default: the config's)."""
  return GlobalGenerator(ngf=model_config.ngf, n_downsampling=model_config.n_downsampling,
                   n_blocks=model_config.n_blocks,
                   feature_noise_std=model_config.feature_noise_std,
                   dtype=jnp.dtype(dtype) if dtype else compute_dtype(model_config))


def discriminator(model_config) -> MultiscaleDiscriminator:
  """The multiscale PatchGAN discriminator of `model_config`."""
  return MultiscaleDiscriminator(ndf=model_config.ndf, n_layers=model_config.n_layers_d,
                                 num_scales=model_config.num_d,
                                 dtype=compute_dtype(model_config))


def generator_inputs(size: int, batch: int = 1, guide: int = 0) -> tuple[jax.Array, ...]:
  """Zero (edges, image[, guide]) of the generator's input shapes: what `init` traces with."""
  zeros = lambda channels: jnp.zeros((batch, size, size, channels), jnp.float32)
  return (zeros(EDGE_CHANNELS), zeros(IMAGE_CHANNELS)) + ((zeros(guide),) if guide else ())


def discriminator_input(size: int, batch: int = 1) -> jax.Array:
  """A zero discriminator input [batch, size, size, DISCRIMINATOR_CHANNELS]."""
  return jnp.zeros((batch, size, size, DISCRIMINATOR_CHANNELS), jnp.float32)


def init_generator(key, module: GlobalGenerator, size: int, guide: int = 0):
  """Fresh generator parameters for `size` x `size` images and `guide` extra channels."""
  return module.init(key, *generator_inputs(size, guide=guide))


def init_discriminator(key, module: MultiscaleDiscriminator, size: int):
  """Fresh discriminator parameters for `size` x `size` images."""
  return module.init(key, discriminator_input(size))


def abstract_generator_params(module: GlobalGenerator, size: int, sharding=None, guide: int = 0):
  """The generator's parameter tree as `jax.ShapeDtypeStruct`s (no memory, no compute);
  with `sharding`, every leaf carries it (what a checkpoint restores into)."""
  abstract = jax.eval_shape(lambda key: init_generator(key, module, size, guide),
                            jax.random.PRNGKey(0))
  if sharding is None:
    return abstract
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      abstract)
