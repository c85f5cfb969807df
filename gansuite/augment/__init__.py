"""Augmentations of the images a discriminator sees; ``diffaugment`` is DiffAugment (Zhao et al. 2020)."""
