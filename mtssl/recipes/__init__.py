"""Recipes: a model spec, weighted loss terms, an optional EMA teacher, and the output to evaluate."""
