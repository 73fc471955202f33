"""Retrieval evaluation: `vien eval` (index a dataset, run its queries through the services' own logic,
score the rankings) and `vien eval compare` (paired significance tests between runs)."""
