import logging

import pytest


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server on 127.0.0.1 for the session: moto's (`moto[server]`, an
    in-memory stand-in for S3 that speaks its HTTP API; not MinIO, not AWS), with a
    bucket `flywheel`. Yields the settings a flywheel needs to use it."""
    import boto3
    from moto.server import ThreadedMotoServer

    from flywheel_assets.harness.services import free_port

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    keys = {"AWS_ACCESS_KEY_ID": "flywheel-test", "AWS_SECRET_ACCESS_KEY": "flywheel-test",
            "AWS_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}",
                          region_name=keys["AWS_REGION"],
                          aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])
    client.create_bucket(Bucket="flywheel")
    try:
        yield {"env": {**keys, "FLYWHEEL_S3_ENDPOINT": f"127.0.0.1:{port}",
                       "FLYWHEEL_S3_USE_SSL": "false"},
               "client": client, "bucket": "flywheel"}
    finally:
        server.stop()

