"""TFDS builders, one per dataset, all emitting the schema in `data_builders.features`.

Importing a builder module registers it with TFDS under its dataset name
(`mvtec_ad`, `visa`, `mvtec_loco`, `madsim`, `real_iad`, `synthetic`).
"""
