"""A real SeaweedFS S3 server for the test session, started through ``infra.localstack``.

Use it from a test module with ``from tests.s3_fixtures import seaweedfs_server  # noqa: F401`` and ask for
the ``seaweedfs`` fixture (the function has another name so that the test argument does not shadow the
import). Pytest makes one session fixture per importing module; they share one server through a
reference count, so the session still runs a single SeaweedFS process.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from enginekit.objectstore import ObjectStoreSettings
from infra.localstack import LOCAL_PROFILE, LocalStack, free_port, pick_stack_ports  # noqa: F401 (re-exported)

TEST_BUCKET = "int8-test-engines"


@dataclass(frozen=True)
class LocalS3:
    """The session's SeaweedFS: endpoint, credentials file and a factory of store settings."""

    stack: LocalStack
    bucket: str

    @property
    def endpoint_url(self) -> str:
        return self.stack.s3_url

    @property
    def credentials_file(self) -> Path:
        return self.stack.credentials_file

    def settings(self, **overrides: Any) -> ObjectStoreSettings:
        values: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "bucket": self.bucket,
            "aws_profile": LOCAL_PROFILE,
            "credentials_file": self.credentials_file,
            # Fail fast in tests; production keeps the defaults.
            "max_attempts": 2,
            "connect_timeout_s": 2.0,
            "read_timeout_s": 10.0,
            "multipart_threshold_mb": 5,
            "multipart_chunksize_mb": 5,
        }
        values.update(overrides)
        return ObjectStoreSettings(**values)

    def raw_client(self) -> Any:
        """A plain boto3 client with the server's credentials, to tamper with objects behind the store."""
        return self.stack.s3_client()


_shared: dict[str, Any] = {"server": None, "users": 0}


@pytest.fixture(scope="session", name="seaweedfs")
def seaweedfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    """One real SeaweedFS process (``weed mini``) on free ports for the whole session."""
    if _shared["server"] is None:
        stack = LocalStack(
            tmp_path_factory.mktemp("seaweedfs-stack"),
            ports=pick_stack_ports(),
            buckets=(TEST_BUCKET,),
            services=("seaweedfs",),
            start_timeout_s=60,
        )
        try:
            stack.up()
        except BaseException:
            stack.down()
            raise
        _shared["server"] = LocalS3(stack=stack, bucket=TEST_BUCKET)
    _shared["users"] += 1
    try:
        yield _shared["server"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            _shared["server"].stack.down()
            _shared["server"] = None
