"""Sample-quality metrics. Keys carry their sample count: ``val/modes_2500``."""
