"""A user's own sequence mixer, benchmarked by seqbench without editing seqbench."""
