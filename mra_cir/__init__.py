"""Command-line entry points of mra-cir (the library lives in `mra_cir.modeling_mra_cir`, `mra_cir.dataset_builders`, `mra_cir.trainers`)."""
