"""What the tests and the benchmarks start for real on this machine: Ray nodes on loopback
(ray_cluster.py), an S3-compatible object store and an MLflow tracking server (services.py), bounded waits
for a condition (waiting.py), and the small demo run they share (demo_run.py)."""
