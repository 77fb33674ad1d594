"""VGG19 feature extractor for the pix2pixHD perceptual loss, and the import of torchvision weights.

`VGG19Features` is torchvision's `vgg19().features[:30]` (3x3 convs with zero padding 1, ReLU,
2x2 max pools) and returns relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 (torchvision indices 1,
6, 11, 20, 29). Images go in as they are, in [-1, 1], without ImageNet normalisation, exactly as
pix2pixHD feeds its VGG loss.

No weights are downloaded: `load_vgg19_params(path)` reads a torchvision `vgg19` state dict
(`features.N.weight` OIHW / `features.N.bias`) from `.npz`, `.safetensors` or `.pth` and returns
the Flax params tree (`{'conv_N': {'kernel', 'bias'}}`, N the torchvision index), to be used as
`VGG19Features().apply({'params': params}, x)`. Keys beyond relu5_1 (later convs, classifier) are
ignored.
"""

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np

from af_jax.models import torch_weights

# (torchvision `features` index, output channels) of each conv up to relu5_1; 'M' is a max pool.
VGG19_LAYERS = ((0, 64), (2, 64), "M", (5, 128), (7, 128), "M", (10, 256), (12, 256), (14, 256),
                (16, 256), "M", (19, 512), (21, 512), (23, 512), (25, 512), "M", (28, 512))
# Convs whose ReLU output is returned (relu1_1, relu2_1, relu3_1, relu4_1, relu5_1).
FEATURE_CONVS = (0, 5, 10, 19, 28)


class VGG19Features(nn.Module):
  """Returns the list of 5 VGG19 activations for an NHWC batch in [-1, 1] (compute `dtype`)."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    features = []
    for layer in VGG19_LAYERS:
      if layer == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        continue
      index, width = layer
      x = nn.relu(nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                          name=f"conv_{index}")(x))
      if index in FEATURE_CONVS:
        features.append(x)
    return features


def _conv_shapes() -> dict[int, tuple[int, int]]:
  """torchvision index -> (in, out) channels of each conv."""
  shapes, channels = {}, 3
  for layer in VGG19_LAYERS:
    if layer != "M":
      index, width = layer
      shapes[index], channels = (channels, width), width
  return shapes


def load_vgg19_params(path) -> dict:
  """Reads torchvision VGG19 weights from `path` into the `VGG19Features` params tree (float32).

  Raises ValueError naming the missing or mis-shaped key and the expected shape.
  """
  state = torch_weights.load_state_dict(path)
  params = {}
  for index, (c_in, c_out) in _conv_shapes().items():
    arrays = {}
    for kind, shape in (("weight", (c_out, c_in, 3, 3)), ("bias", (c_out,))):
      key = f"features.{index}.{kind}"
      if key not in state:
        raise ValueError(f"{path}: missing key {key!r} (expected shape {shape}); is this a "
                         "torchvision vgg19 state dict?")
      if tuple(state[key].shape) != shape:
        raise ValueError(f"{path}: key {key!r} has shape {tuple(state[key].shape)}, expected "
                         f"{shape}")
      arrays[kind] = np.asarray(state[key], np.float32)
    params[f"conv_{index}"] = {"kernel": arrays["weight"].transpose(2, 3, 1, 0),
                               "bias": arrays["bias"]}
  return params
