"""Networks of AnomalyFactory and their weight import.

- `generator.GlobalGenerator`: the shared-encoder, texture + heatmap generator (paper Sec. 3.1).
- `discriminator.MultiscaleDiscriminator`: pix2pixHD's 2-scale PatchGAN with intermediate features.
- `vgg.VGG19Features` / `vgg.load_vgg19_params`: the perceptual-loss network and its weights.
- `inception.InceptionV3Compat`, `lpips.LPIPS`: the generation-metric networks (torch-fidelity's
  Inception for IS, LPIPS-VGG), used through `af_jax.metrics.generation`.
- `torch_weights.load_state_dict`: safe reading of .npz / .safetensors / .pth state dicts.
- `layers`: the PyTorch-exact building blocks; `flops`: analytic cost of the networks.
"""
