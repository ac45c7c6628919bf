"""The download stage: a url+caption table into webdataset shards with img2dataset.

config.py      DownloadConfig (the recipe's `download:` section), the sources and what a row must have
url_tables.py  the table img2dataset reads: the sources' rows, or an image table served over loopback
distributor.py img2dataset's multiprocessing distributor, restarted when a worker dies
results.py     img2dataset's shard stats and failed rows reconciled into counts and the rejected sink
stage.py       run_download and STAGE
"""
