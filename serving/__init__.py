"""The online half: an HTTP server that follows a channel pointer in S3 and hot-swaps verified engines.

Imports only the runtime side of the project (``enginekit``) and its own HTTP stack; never torch,
transformers, modelopt, datasets, prefect or the pipeline's config (``tests/test_serving_install.py``
installs ``.[serve]`` into a fresh virtual environment to keep it that way).
"""
