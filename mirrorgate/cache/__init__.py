"""The cache: pure policy (policy.py), single-flight fills (fill.py) and storage behind a
small interface (store.py) that a second backend, such as S3 for fleet mode, can
implement."""
