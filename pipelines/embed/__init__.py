"""The embed stage: every caption through the frozen text encoder once, into per-shard sidecars.

config.py      EmbedConfig (the recipe's `embed:` section)
embedder.py    a shard's captions by field, and the Ray Data actor that encodes and writes them
stage.py       embed_shards (also the CLI's), the summary, run_embed and STAGE
"""
