"""The scenes stage: generated images with short, dense and second-language captions, drawn by
demo/basic_scenes.py, demo/rich_scenes.py and demo/second_language.py.

table.py       the scene table the other stages read (served by download, held-out captions kept out of
               the LM corpora)
stage.py       run_scenes and STAGE
"""
