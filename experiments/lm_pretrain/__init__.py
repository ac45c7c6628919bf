"""The lm_pretrain stage: next-token pretraining of the tiny LLM that the long-caption experiment
fine-tunes, on the corpus of demo/lm_corpus.py.

loop.py        packing, batches and the training loop, free of Ray
stage.py       run_lm_pretrain and STAGE
"""
