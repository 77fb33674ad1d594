"""Analytic FLOP counts of the networks, from their layer shapes (for MFU and throughput reports).

Accounting:
- Only convolutions are counted, at 2 FLOPs per multiply-accumulate; biases, norms, activations,
  pooling and losses are a fraction of a percent and are left out.
- A stride-2 transposed conv is counted as a dense 3x3 conv over the zero-dilated input, i.e.
  output pixels x 9 x C_in x C_out (4x the useful scatter MACs; the convention of the figures
  below). `layers.ConvTransposeX2` computes it in sub-pixel form with 4 x C_in x C_out per output
  pixel, so these counts overstate its real work.
- A backward pass costs 2x its forward (input gradients + weight gradients).
- Training step per image: generator forward + backward (3 G); discriminator on real and fake for
  the D loss, with backward (6 D); discriminator on fake for the G loss with backward to the input
  (3 D) plus on real for the feature-matching targets (1 D); VGG on fake with backward and on the
  real target forward only (4 VGG).

At 256 px with the paper's configuration: generator forward ~177 GFLOP, step ~815 GFLOP per image.
`image_size` is an int (square) or (height, width).
"""

from af_jax.models.vgg import VGG19_LAYERS

DISCRIMINATOR_IN_CHANNELS = 7  # edges, input image, real or generated image


def _hw(image_size) -> tuple[int, int]:
  return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
  return (size + 2 * padding - kernel) // stride + 1


def _conv_flops(h_out: int, w_out: int, c_in: int, c_out: int, kernel: int) -> int:
  return 2 * h_out * w_out * c_in * c_out * kernel * kernel


def _decoder_flops(h: int, w: int, ngf: int, n_downsampling: int, out_channels: int) -> int:
  """From the bottleneck (h, w) back to full resolution; returns the FLOPs."""
  flops, width = 0, ngf * 2 ** n_downsampling
  for _ in range(n_downsampling):
    h, w = 2 * h, 2 * w
    flops += _conv_flops(h, w, width, width // 2, 3)
    width //= 2
  return flops + _conv_flops(h, w, width, out_channels, 7)


def generator_flops(image_size, ngf: int = 64, n_downsampling: int = 4, n_blocks: int = 9,
                    texture_channels: int = 3) -> int:
  """Forward FLOPs of `GlobalGenerator` for one image (encoder + texture and heatmap decoders)."""
  h, w = _hw(image_size)
  flops = _conv_flops(h, w, 1 + 3, ngf, 7)
  width = ngf
  for _ in range(n_downsampling):
    h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
    flops += _conv_flops(h, w, width, 2 * width, 3)
    width *= 2
  flops += 2 * n_blocks * _conv_flops(h, w, width, width, 3)
  return (flops + _decoder_flops(h, w, ngf, n_downsampling, texture_channels)
          + _decoder_flops(h, w, ngf, n_downsampling, 1))


def discriminator_flops(image_size, in_channels: int = DISCRIMINATOR_IN_CHANNELS, ndf: int = 64,
                        n_layers: int = 3, num_scales: int = 2) -> int:
  """Forward FLOPs of `MultiscaleDiscriminator` for one image (all scales)."""
  h, w = _hw(image_size)
  flops = 0
  for scale in range(num_scales):
    if scale:
      h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
    lh, lw, c_in = h, w, in_channels
    for j in range(n_layers + 2):
      c_out = 1 if j == n_layers + 1 else min(ndf * 2 ** j, 512)
      stride = 2 if j < n_layers else 1
      lh, lw = _conv_out(lh, 4, stride, 2), _conv_out(lw, 4, stride, 2)
      flops += _conv_flops(lh, lw, c_in, c_out, 4)
      c_in = c_out
  return flops


def vgg_flops(image_size) -> int:
  """Forward FLOPs of `VGG19Features` (up to relu5_1) for one image."""
  h, w = _hw(image_size)
  flops, c_in = 0, 3
  for layer in VGG19_LAYERS:
    if layer == "M":
      h, w = h // 2, w // 2
    else:
      flops += _conv_flops(h, w, c_in, layer[1], 3)
      c_in = layer[1]
  return flops


def train_step_flops(image_size, ngf: int = 64, n_downsampling: int = 4, n_blocks: int = 9,
                     ndf: int = 64, n_layers: int = 3, num_scales: int = 2,
                     use_vgg: bool = True) -> int:
  """FLOPs of one G + D training step per image (see the module docstring for the accounting)."""
  g = generator_flops(image_size, ngf, n_downsampling, n_blocks)
  d = discriminator_flops(image_size, DISCRIMINATOR_IN_CHANNELS, ndf, n_layers, num_scales)
  vgg = vgg_flops(image_size) if use_vgg else 0
  return 3 * g + 10 * d + 4 * vgg
