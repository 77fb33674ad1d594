"""af_jax: AnomalyFactory in JAX/Flax.

One network (pix2pixHD global generator with texture and heatmap decoders)
trained in three stages (BootGenerator -> FlareGenerator -> BlazeDetector) to
generate anomalies with pixel-accurate heatmaps and to localize anomalies.
"""

__version__ = "0.1.0"
