"""pix2pixHD multiscale PatchGAN discriminator with intermediate features (for feature matching).

Each scale is the pix2pixHD `NLayerDiscriminator` with `getIntermFeat=True`: 4x4 convs padded by
exactly 2 on every side, stride 2 for the first `n_layers` convs and stride 1 for the last two,
widths ndf, 2ndf, ... capped at 512, instance norm on all but the first and last conv, LeakyReLU
0.2 on all but the last. At a 256 px input the five maps are 129, 65, 33, 34 and 35 pixels. The
next scale sees the input after a 3x3 stride-2 average pool that excludes padding.

Parameter names follow pix2pixHD's state dict: conv `j` of scale `s` is `scale{s}_layer{j}`
(PyTorch `scale{s}_layer{j}.0.weight`), and, as in pix2pixHD, the full-resolution input goes
through the highest-numbered scale. With the paper's 7-channel input (edges, input image, image)
and the defaults there are 5,537,666 parameters.
"""

import jax
import jax.numpy as jnp
import flax.linen as nn

from af_jax.models import layers

MAX_WIDTH = 512


class MultiscaleDiscriminator(nn.Module):
  """`__call__(x)` returns, per scale (full resolution first), the `n_layers + 2` layer outputs.

  The last output of each scale is the patch score map [B, h, w, 1]; all outputs are float32.
  """
  ndf: int = 64
  n_layers: int = 3
  num_scales: int = 2
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> list[list[jax.Array]]:
    results = []
    for i in range(self.num_scales):
      scale = self.num_scales - 1 - i
      outputs, h = [], x
      for j in range(self.n_layers + 2):
        last = j == self.n_layers + 1
        width = 1 if last else min(self.ndf * 2 ** j, MAX_WIDTH)
        stride = 2 if j < self.n_layers else 1
        h = layers.conv(width, 4, stride=stride, padding=2, dtype=self.dtype,
                        matmul_kernel_grad_on_cpu=stride == 1,
                        name=f"scale{scale}_layer{j}")(h)
        if 0 < j and not last:
          h = layers.instance_norm(h)
        if not last:
          h = nn.leaky_relu(h, negative_slope=0.2)
        outputs.append(h.astype(jnp.float32))
      results.append(outputs)
      if i != self.num_scales - 1:
        x = layers.avg_pool_3x3_s2(x)
    return results
