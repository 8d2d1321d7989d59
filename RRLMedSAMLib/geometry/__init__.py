"""Physical geometry: the networks' working grid, affine pre-alignment, deformation fields."""
