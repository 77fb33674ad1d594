"""What the detector is given and must never fall below: each category's per-pixel normal
reference, its patch memory, the two no-learning floors, and the trust fitted in them."""
