"""The recaption stage: dense captions for every image by a VLM in vLLM, through ray.data.llm.

config.py      RecaptionConfig (the recipe's `recaption:` section)
processor.py   the Ray Data LLM processor: decode, prompt, vLLM, generated text
shards.py      rows read per shard, the accept/reject rule, captions/ + rejected/ + markers written
report.py      samples.html: thumbnails beside their captions
stage.py       recaption_shards (also the CLI's), run_recaption and STAGE
"""
