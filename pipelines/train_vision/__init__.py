"""The train_vision stage: a CLIP vision tower and the LLM2CLIP adapter trained on Ray Train against the
frozen LLM's caption features (LLM2CLIP step 2).

config.py      TrainVisionConfig (the recipe's `train_vision:` section)
records.py     a joined sample, the loader's settings, the data position a checkpoint stores
data.py        image shards joined with their sidecars, dealt to workers, resumable to the batch
decode.py      a batch's images decoded and augmented, in the training process or in processes ahead
loop.py        the optimizer, the step (the global CLIP loss) and the training state, free of Ray
model.py       the tower (models.vision_tower) with the adapter, and its image transform
held_out.py    the held-out images and the recalls on them
worker.py      the Ray Train worker function and the trainer that runs it
stage.py       run_train_vision and STAGE
"""
