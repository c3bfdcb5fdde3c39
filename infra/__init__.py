"""Local stack (SeaweedFS S3 + Prefect server) for the embedded default, and deployment manifests."""
