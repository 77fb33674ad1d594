"""Evaluation metrics.

`localization`: pixel AUROC, AUPRO and image AUROC (numpy, no JAX needed).
`generation`: Inception Score and IC-LPIPS of generated anomaly images.
"""
