"""The CPU demo: generated scenes served over loopback and tiny models built from configs, as two stages
(scenes, tiny_models) that feed the production chain where real data and weights cannot be downloaded."""
