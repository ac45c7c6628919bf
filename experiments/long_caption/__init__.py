"""The long_caption_experiment stage: LLM2CLIP against a base LLM and CLIP text towers on long
captions, in miniature, over several seeds.

config.py      LongCaptionExperimentConfig and the arm names
samples.py     the samples, the validation split by family, captions encoded once, the LLMs' CRA
arms.py        one arm: build, train, evaluate (the unit every run shares)
runs.py        the (arm, seed) runs as Ray tasks
report.py      the summary, the claims, the tables and the plots
stage.py       run_long_caption_experiment and STAGE
"""
