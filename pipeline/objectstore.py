"""Object storage (S3): one set of settings, mapped onto every client that touches the lake.

The settings come from the environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`) or from the YAML's
`spark.conf` in s3a's own keys (`spark.hadoop.fs.s3a.endpoint`, `...access.key`,
...); `spark.conf` wins. Every client needs them in its own form:

- Spark (s3a, delta-spark and Spark's Parquet reads): s3a ignores `AWS_ENDPOINT_URL`,
  so it gets `fs.s3a.endpoint`, path-style access and SSL off for a plain-http
  endpoint. `s3://` is served by s3a too, so one URI works in every client.
- delta-rs, pyarrow (the delta-rs writer's tasks, footers), boto3 (MLflow's S3
  artifacts, the reachability check): the `AWS_*` environment, which all of them
  read, plus `AWS_ALLOW_HTTP` for delta-rs and `MLFLOW_S3_ENDPOINT_URL` for MLflow.
  `export_environment` sets it before the Spark JVM starts, so Spark's Python
  workers and the Horovod ranks inherit it.
- Petastorm: a pyarrow `S3FileSystem` (its own `s3://` route would need s3fs).

Nothing here holds a secret in `conf/`: the YAML may name keys, the values come
from wherever the user keeps them.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
import uuid
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

import pyarrow.fs as pafs

from pipeline.errors import EnvironmentSetupError, LakeError

_logger = logging.getLogger(__name__)

S3_SCHEMES = ("s3", "s3a")
S3A = "spark.hadoop.fs.s3a."
S3A_CLASS = "org.apache.hadoop.fs.s3a.S3AFileSystem"
# Seconds to open a connection: an endpoint that does not answer fails fast, not after
# the SDKs' minutes of retries.
CONNECT_TIMEOUT_S = 5


def is_s3(uri: str) -> bool:
    return urllib.parse.urlparse(uri).scheme in S3_SCHEMES


def bucket_and_key(uri: str) -> tuple[str, str]:
    parsed = urllib.parse.urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


class StorageError(LakeError):
    """The lake's object store cannot be used: credentials, endpoint, bucket or access."""


@dataclass(frozen=True)
class S3Settings:
    """Where the S3 endpoint is and who we are there. All None: AWS's own defaults."""

    endpoint: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None

    @classmethod
    def resolve(
        cls, spark_conf: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
    ) -> S3Settings:
        """`spark.conf`'s s3a keys first, then the environment."""
        conf = spark_conf or {}
        env = os.environ if env is None else env

        def pick(s3a_key: str, *env_keys: str) -> str | None:
            value = conf.get(S3A + s3a_key)
            for key in env_keys:
                value = value or env.get(key)
            return value or None

        return cls(
            endpoint=pick("endpoint", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            region=pick("endpoint.region", "AWS_REGION", "AWS_DEFAULT_REGION"),
            access_key=pick("access.key", "AWS_ACCESS_KEY_ID"),
            secret_key=pick("secret.key", "AWS_SECRET_ACCESS_KEY"),
            session_token=pick("session.token", "AWS_SESSION_TOKEN"),
        )

    @property
    def plain_http(self) -> bool:
        return bool(self.endpoint) and str(self.endpoint).startswith("http://")

    def spark_conf(self) -> dict[str, str]:
        """s3a's settings (and `s3://` served by s3a), as `spark.hadoop.*` session keys."""
        conf = {
            "spark.hadoop.fs.s3.impl": S3A_CLASS,
            S3A + "impl": S3A_CLASS,
            # bounded: a dead endpoint fails in seconds (s3a's defaults retry for minutes)
            S3A + "connection.establish.timeout": str(CONNECT_TIMEOUT_S * 1000),
            S3A + "attempts.maximum": "3",
            S3A + "retry.limit": "3",
        }
        if self.endpoint:
            conf[S3A + "endpoint"] = self.endpoint
            # S3-compatible and local endpoints serve buckets as paths, not host names
            conf[S3A + "path.style.access"] = "true"
            conf[S3A + "connection.ssl.enabled"] = str(not self.plain_http).lower()
        if self.region:
            conf[S3A + "endpoint.region"] = self.region
        if self.access_key and self.secret_key:
            conf[S3A + "access.key"] = self.access_key
            conf[S3A + "secret.key"] = self.secret_key
            if self.session_token:
                conf[S3A + "session.token"] = self.session_token
                conf[S3A + "aws.credentials.provider"] = (
                    "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
                )
        return conf

    def environment(self) -> dict[str, str]:
        """The `AWS_*` variables delta-rs, pyarrow and boto3 read, and MLflow's endpoint."""
        env: dict[str, str] = {}
        if self.endpoint:
            env["AWS_ENDPOINT_URL"] = self.endpoint
            env["MLFLOW_S3_ENDPOINT_URL"] = self.endpoint
            if self.plain_http:
                env["AWS_ALLOW_HTTP"] = "true"  # delta-rs refuses http:// otherwise
        if self.region:
            env["AWS_REGION"] = self.region
            env["AWS_DEFAULT_REGION"] = self.region
        if self.access_key and self.secret_key:
            env["AWS_ACCESS_KEY_ID"] = self.access_key
            env["AWS_SECRET_ACCESS_KEY"] = self.secret_key
            if self.session_token:
                env["AWS_SESSION_TOKEN"] = self.session_token
        return env

    def storage_options(self) -> dict[str, str]:
        """delta-rs's storage options (the same keys it reads from the environment)."""
        options = {k: v for k, v in self.environment().items() if not k.startswith("MLFLOW")}
        options["AWS_CONNECT_TIMEOUT"] = f"{CONNECT_TIMEOUT_S}s"
        return options

    def arrow_filesystem(self) -> pafs.S3FileSystem:
        """A pyarrow S3 filesystem (what Petastorm reads through)."""
        kwargs: dict[str, object] = {"connect_timeout": float(CONNECT_TIMEOUT_S)}
        if self.endpoint:
            parsed = urllib.parse.urlparse(self.endpoint)
            kwargs["endpoint_override"] = parsed.netloc or self.endpoint
            kwargs["scheme"] = parsed.scheme or "https"
        if self.region:
            kwargs["region"] = self.region
        if self.access_key and self.secret_key:
            kwargs["access_key"] = self.access_key
            kwargs["secret_key"] = self.secret_key
            kwargs["session_token"] = self.session_token
        return pafs.S3FileSystem(**kwargs)

    def boto3_client(self) -> object:
        """A boto3 S3 client with a bounded connect time and one retry."""
        import boto3
        from botocore.config import Config as BotoConfig

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region or "us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            aws_session_token=self.session_token,
            config=BotoConfig(
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=CONNECT_TIMEOUT_S,
                retries={"max_attempts": 1, "mode": "standard"},
                s3={"addressing_style": "path" if self.endpoint else "auto"},
            ),
        )


def export_environment(
    settings: S3Settings, environ: MutableMapping[str, str] | None = None
) -> None:
    """Put the settings where delta-rs, pyarrow, boto3 and child processes read them."""
    environ = os.environ if environ is None else environ
    for key, value in settings.environment().items():
        environ[key] = value


def petastorm_filesystem(uri: str) -> object | None:
    """The filesystem to hand Petastorm for `uri`: pyarrow's S3 client for s3://, else None
    (Petastorm resolves local paths itself).

    Petastorm 0.12 drives pyarrow's legacy ParquetDataset, which takes only legacy
    filesystems: pyarrow's S3 client goes in behind fsspec's ArrowFSWrapper and pyarrow's
    legacy wrapper for fsspec file systems. Petastorm also strips the scheme from each path
    through fsspec, which knows s3:// only from s3fs; without s3fs a minimal fsspec class
    that only strips the scheme stands in.
    """
    if not is_s3(uri):
        return None
    import importlib.util

    import fsspec
    from fsspec.implementations.arrow import ArrowFSWrapper
    from pyarrow.filesystem import S3FSWrapper

    if importlib.util.find_spec("s3fs") is None:
        from fsspec.spec import AbstractFileSystem

        class _StripS3Scheme(AbstractFileSystem):
            protocol = S3_SCHEMES

        for scheme in S3_SCHEMES:
            fsspec.register_implementation(scheme, _StripS3Scheme, clobber=True)
    return S3FSWrapper(ArrowFSWrapper(filesystem_for(uri)[0]))


def configure_session(spark: object, settings: S3Settings) -> None:
    """Apply the settings to a running session (a notebook's, or one whose JVM started before
    the settings were known): s3a file systems opened afterwards take them, and Python tasks
    (the delta-rs writer's, the Horovod ranks) get the environment. PySpark sends
    `SparkContext.environment` with every Python function; its worker daemons are keyed by it."""
    context = spark.sparkContext  # type: ignore[attr-defined]
    hadoop = context._jsc.hadoopConfiguration()
    for key, value in settings.spark_conf().items():
        hadoop.set(key.removeprefix("spark.hadoop."), value)
    context.environment.update(settings.environment())


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path in it) for a local path or a URI; S3 from the settings."""
    if is_s3(uri):
        bucket, key = bucket_and_key(uri)
        return S3Settings.resolve().arrow_filesystem(), f"{bucket}/{key}".rstrip("/")
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def check_connector(spark: object, uri: str) -> None:
    """Fail, naming the fix, when `uri` is on S3 but s3a's jars are not on the session."""
    if not is_s3(uri):
        return
    from pipeline.spark import jvm_class_available

    if not jvm_class_available(spark, S3A_CLASS):
        from pipeline.jars import cache_dir, packages

        raise EnvironmentSetupError(
            f"{uri} is on S3 but the Hadoop S3 connector ({S3A_CLASS}) is not on this Spark "
            f"session's classpath: run `make jars` (caches hadoop-aws and the AWS SDK bundle "
            f"in {cache_dir()}, which the Spark factory loads), or under spark-submit pass "
            f"--packages {packages('s3a')}"
        )


def check_reachable(uri: str, settings: S3Settings | None = None, write: bool = True) -> str:
    """Check that the bucket of `uri` answers and (with `write`) takes a put and a delete.

    Returns a one-line description of what was checked; raises StorageError with one
    line naming the cause: no credentials, endpoint unreachable, bucket missing, or
    access denied. Bounded by the connect timeout (one attempt, no SDK retries).
    """
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )
    from botocore.exceptions import (
        ConnectTimeoutError as BotoConnectTimeout,
    )
    from botocore.exceptions import (
        ReadTimeoutError as BotoReadTimeout,
    )

    settings = settings or S3Settings.resolve()
    bucket, key = bucket_and_key(uri)
    where = settings.endpoint or "AWS"
    client = settings.boto3_client()
    probe = f"{key.rstrip('/')}/_sparktrain_probe_{uuid.uuid4().hex}".lstrip("/")
    try:
        client.head_bucket(Bucket=bucket)  # type: ignore[attr-defined]
        if write:
            client.put_object(Bucket=bucket, Key=probe, Body=b"")  # type: ignore[attr-defined]
            client.delete_object(Bucket=bucket, Key=probe)  # type: ignore[attr-defined]
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise StorageError(
            f"no S3 credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or an AWS profile / instance role)"
        ) from exc
    except (TimeoutError, EndpointConnectionError, BotoConnectTimeout, BotoReadTimeout) as exc:
        raise StorageError(
            f"S3 endpoint {where} unreachable for {uri} (no answer within "
            f"{CONNECT_TIMEOUT_S} s): check AWS_ENDPOINT_URL (or spark.hadoop.fs.s3a.endpoint) "
            "and that the server is running"
        ) from exc
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchBucket"):
            raise StorageError(
                f"S3 bucket '{bucket}' does not exist at {where}: create it "
                f"(aws s3 mb s3://{bucket}) or fix lake.root"
            ) from exc
        if status in (401, 403) or code in (
            "403",
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
        ):
            raise StorageError(
                f"S3 access denied to bucket '{bucket}' at {where} ({code}): check the "
                "credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and that they may "
                "read and write it"
            ) from exc
        raise StorageError(f"S3 bucket '{bucket}' at {where} cannot be used: {exc}") from exc
    return f"{uri} reachable at {where}" + (" and writable" if write else "")
