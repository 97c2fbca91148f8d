"""What makes a `datasets.Dataset`, one subpackage per builder: `mra_triplets` (embed, mine, build, publish), `agents`
(the MRA agent: registry, prompts, cache, filters, backends) and `synthetic_world` (the offline world, its benchmarks
and its scene-graph agent)."""
