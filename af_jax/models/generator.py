"""The AnomalyFactory generator: one encoder, a texture decoder and a heatmap decoder (Sec. 3.1).

The input is `concat(E, I_in)` (edge map first, then RGB, all in [-1, 1]), followed by the
optional `guide` channels (BlazeDetector's reference deviation map, `af_jax.evidence.reference`, or
FlareGenerator's edited region), which also join the heatmap decoder's last layer. The encoder is the
pix2pixHD global generator's front half (7x7 conv, `n_downsampling` stride-2 convs, `n_blocks`
residual blocks at `ngf * 2**n_downsampling` channels). Two decoders of identical structure turn
the shared features into a texture `T` (tanh, 3 channels) and a heatmap `H` (sigmoid, 1 channel),
and the parameter-free fusion `I_out = I_in * (1 - H) + T * H` gives the output image.

With the paper's configuration (the defaults) the model has exactly 188,717,380 parameters, the
paper's "719MB" per model in float32. Layers compute in `dtype`; the three outputs are float32.

For the FlareGenerator, `add_noise=True` with `feature_noise_std > 0` adds Gaussian noise to the
bottleneck features (rng stream 'noise'), so the same inputs give different anomalies.
"""

import jax
import jax.numpy as jnp
import flax.linen as nn

from af_jax.models import layers


def fuse(image: jax.Array, texture: jax.Array, heatmap: jax.Array) -> jax.Array:
  """`image * (1 - heatmap) + texture * heatmap`: where H is 1 the texture replaces the image."""
  return image * (1.0 - heatmap) + texture * heatmap


class ResidualBlock(nn.Module):
  """pix2pixHD ResnetBlock: x + (reflect-pad, 3x3 conv, IN, ReLU, reflect-pad, 3x3 conv, IN)."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = layers.reflect_pad_conv(self.features, 3, dtype=self.dtype, name="conv_0")(x)
    y = nn.relu(layers.instance_norm(y))
    y = layers.reflect_pad_conv(self.features, 3, dtype=self.dtype, name="conv_1")(y)
    return x + layers.instance_norm(y)


class Encoder(nn.Module):
  """7x7 conv, stride-2 downsamplings doubling the width, then residual blocks at the bottleneck."""
  ngf: int = 64
  n_downsampling: int = 4
  n_blocks: int = 9
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = layers.reflect_pad_conv(self.ngf, 7, dtype=self.dtype, name="conv_in")(x)
    x = nn.relu(layers.instance_norm(x))
    for i in range(self.n_downsampling):
      x = layers.conv(self.ngf * 2 ** (i + 1), 3, stride=2, padding=1, dtype=self.dtype,
                      name=f"down_{i}")(x)
      x = nn.relu(layers.instance_norm(x))
    width = self.ngf * 2 ** self.n_downsampling
    for i in range(self.n_blocks):
      x = ResidualBlock(width, dtype=self.dtype, name=f"res_{i}")(x)
    return x


class Decoder(nn.Module):
  """Stride-2 transposed convs halving the width back to `ngf`, then a 7x7 conv to `out_channels`.

  `skip` [B, H, W, G] (full resolution), when given, joins the features before that last conv.
  Returns pre-activation values; the caller applies tanh or sigmoid in float32.
  """
  out_channels: int
  ngf: int = 64
  n_downsampling: int = 4
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, skip: jax.Array | None = None) -> jax.Array:
    for i in range(self.n_downsampling):
      x = layers.conv_transpose_x2(self.ngf * 2 ** (self.n_downsampling - i - 1),
                                   dtype=self.dtype, name=f"up_{i}")(x)
      x = nn.relu(layers.instance_norm(x))
    inputs = (x,) if skip is None else (x, skip)
    x = layers.reflect_pad_conv(self.out_channels, 7, dtype=self.dtype, name="conv_out")(*inputs)
    return x.astype(jnp.float32)


class GlobalGenerator(nn.Module):
  """Edge map + image in, `{'output', 'texture', 'heatmap'}` out (see the module docstring).

  pix2pixHD calls this network the global generator; `af_jax.infer.Generator` is the
  inference wrapper that generates anomalies with a trained one.

  Attributes:
    ngf: width of the first layer; doubled at every downsampling.
    n_downsampling: number of stride-2 stages (the input side must be divisible by 2**this).
    n_blocks: residual blocks at the bottleneck.
    texture_channels: channels of `T` (3 for RGB).
    feature_noise_std: std of the bottleneck noise used when `add_noise` is set (FlareGenerator).
    dtype: compute dtype of the layers (parameters stay float32).
  """
  ngf: int = 64
  n_downsampling: int = 4
  n_blocks: int = 9
  texture_channels: int = 3
  feature_noise_std: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, edges: jax.Array, image: jax.Array, guide: jax.Array | None = None, *,
               add_noise: bool = False) -> dict[str, jax.Array]:
    """Args: `edges` [B,H,W,1], `image` [B,H,W,3] and optional `guide` [B,H,W,G], all in
    [-1, 1]; `add_noise` needs rng 'noise'."""
    inputs = [edges, image] + ([] if guide is None else [guide])
    if any(x.shape[:3] != image.shape[:3] for x in inputs) or edges.shape[-1] != 1:
      raise ValueError("GlobalGenerator expects edges [B,H,W,1], image [B,H,W,C] and guide "
                       "[B,H,W,G] of the same B,H,W; got " + ", ".join(
                           f"{name} {x.shape}" for name, x in zip(("edges", "image", "guide"),
                                                                  inputs)))
    features = Encoder(self.ngf, self.n_downsampling, self.n_blocks, dtype=self.dtype,
                       name="encoder")(jnp.concatenate(inputs, axis=-1))
    if add_noise and self.feature_noise_std > 0:
      noise = jax.random.normal(self.make_rng("noise"), features.shape, features.dtype)
      features = features + self.feature_noise_std * noise
    texture = jnp.tanh(Decoder(self.texture_channels, self.ngf, self.n_downsampling,
                               dtype=self.dtype, name="texture_decoder")(features))
    # The guide also skips to the heatmap's last layer: the heatmap must be pixel-precise, and
    # the bottleneck (1/2**n_downsampling of the side) blurs what enters only the encoder.
    heatmap = nn.sigmoid(Decoder(1, self.ngf, self.n_downsampling, dtype=self.dtype,
                                 name="heatmap_decoder")(features, guide))
    output = fuse(image.astype(jnp.float32), texture, heatmap)
    return {"output": output, "texture": texture, "heatmap": heatmap}
