"""Evaluation metrics.

`localization`: pixel AUROC, AUPRO and image AUROC (numpy, no JAX needed).
"""
