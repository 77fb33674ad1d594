"""Using trained runs: generate anomalies (`generator`) and localize them (`detector`).

`trained_network` loads a run's generator onto devices (through `af_jax.runs`, as teachers
do); `thresholds` is its calibration (the heatmap post-processing it shares with the floors
is `af_jax.postprocess`);
`batching` splits image lists into device batches; `defaults` holds the settings' defaults
that the commands' flags and the demo read. `af_jax.infer` re-exports the public API.
"""
