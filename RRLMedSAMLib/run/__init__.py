"""What a run is, shared by training and inference: its folder, configuration, presets, methods, networks, teacher, device and weights files."""
