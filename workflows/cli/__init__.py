"""Stage command lines that run without a recipe: recaption, embed and evaluate a folder of shards."""
