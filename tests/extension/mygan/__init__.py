"""A user's own GAN family, outside the gansuite repository: the example of README "Your own family or data"."""
