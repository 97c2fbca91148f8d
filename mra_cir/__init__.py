"""Command-line entry points of mra-cir (the library lives in `modeling_mra_cir`, `dataset_builders`, `trainers`)."""
