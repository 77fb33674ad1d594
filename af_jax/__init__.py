"""af_jax: AnomalyFactory in JAX/Flax.

One network (pix2pixHD global generator with texture and heatmap decoders)
trained in three stages (BootGenerator -> FlareGenerator -> BlazeDetector) to
generate anomalies with pixel-accurate heatmaps and to localize anomalies.

`af_jax.load_detector(DIR)` loads an exported detector (`af-jax export-detector`), checked
(`af_jax.inference.detector_file`); it is imported on first use, so `import af_jax` stays light.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
  if name == "load_detector":
    from af_jax.inference.detector_file import load_detector  # pylint: disable=g-import-not-at-top
    return load_detector
  raise AttributeError(f"module 'af_jax' has no attribute {name!r}")
