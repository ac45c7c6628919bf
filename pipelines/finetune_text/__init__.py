"""The finetune_text stage: caption-contrastive fine-tuning of an LLM into a caption encoder on Ray Train
(LLM2CLIP step 1).

config.py      FinetuneTextConfig (the recipe's `finetune_text:` section)
pairs.py       caption pairs from the download (and recaption) output, and the pair files read back
batches.py     batches dealt by (seed, step, rank): a resumed run sees the batches an uninterrupted one would
loop.py        the contrastive loop and MNTP's, free of Ray
mntp.py        LLM2Vec's MNTP step on a worker, saved once under the artifact
cra.py         caption retrieval accuracy before and after
worker.py      the Ray Train worker function and the trainer that runs it
stage.py       run_finetune_text and STAGE
"""
