"""Data preparation: synthetic-contrast brain datasets, the prostate dataset, the standard dataset layout."""
