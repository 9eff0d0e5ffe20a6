"""Videos -> per-modality features, written through ``scd_core.features``."""
