"""The `af-jax` verbs, one module each: argument parsing, reading inputs and writing outputs.

The work itself lives in the families below them (`af_jax.training`, `af_jax.inference`,
`af_jax.metrics`, `data_builders`); `af_jax/cli.py` maps each verb to its module's `main`.
`run_flags` holds the flags and the error handling every inference verb shares;
`image_files` reads and checks the images, masks and categories users point at;
`output_files` writes outputs so that an interrupted command never looks finished.
"""
