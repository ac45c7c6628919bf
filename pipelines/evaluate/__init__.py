"""The evaluate stage: retrieval on short and long captions, CRA and zero-shot, with a table and plots.

config.py      EvaluateConfig, its benchmarks and zero-shot sets (the recipe's `evaluate:` section)
run.py         the sets loaded, images and captions encoded, scored
report.py      the table (markdown, HTML) and the plots
stage.py       score (also the CLI's), run_evaluate and STAGE
"""
