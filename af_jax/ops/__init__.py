"""Pure array functions: augmentation, edge manipulation, regions, edges, foreground, synthetic
anomalies. Key-first and jittable; nothing here reads files or holds state."""
