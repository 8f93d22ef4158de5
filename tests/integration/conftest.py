"""Real local S3: moto's standalone server on 127.0.0.1, once per session."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def moto_s3():
    """moto's server over HTTP; the standard AWS_* variables point boto3 and s3fs at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield {"host": host, "port": port, "url": env["AWS_ENDPOINT_URL"]}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture
def s3(moto_s3):
    """A boto3 client on the moto server."""
    import boto3

    return boto3.client("s3")
