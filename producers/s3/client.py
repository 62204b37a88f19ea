"""boto3 calls with the project's failure rules: transient errors retried within the retry
budget, refused credentials turned into a ConnectorError that says what to do.

* **Transient** — throttling (``SlowDown``, ``Throttling``, 429, 503), S3's own 5xx, and
  connection errors: retried with the :class:`ragstream.failures.RetryBudget` backoff (at
  least what a ``Retry-After`` header asks), until ``RAGSTREAM_RETRY_BUDGET_S`` is spent;
  then :class:`S3Unavailable` (a :class:`ragstream.failures.Transient`) says so. botocore's
  own retries are off, so one budget governs.
* **Credentials refused** (``InvalidAccessKeyId``, ``SignatureDoesNotMatch``,
  ``ExpiredToken``, ``AccessDenied``, no credentials at all) — a ConnectorError naming where
  the credentials come from (never their values) and what to check. A missing bucket or
  queue is one too.
* Anything else is returned to the caller as botocore raised it (``NoSuchKey`` for an
  object deleted while it was being read is an answer, not a failure).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ragstream.connector import ConnectorError
from ragstream.failures import RetryBudget, Transient, reason
from ragstream.logging import get_logger

from producers.s3.config import S3Config, resolve_credentials

log = get_logger(__name__)

THROTTLING = frozenset({"SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
                        "RequestLimitExceeded", "TooManyRequestsException", "RequestThrottledException",
                        "ProvisionedThroughputExceededException", "BandwidthLimitExceeded"})
TRANSIENT = THROTTLING | {"RequestTimeout", "RequestTimeoutException", "ServiceUnavailable", "InternalError",
                          "InternalFailure", "PriorRequestNotComplete", "OperationAborted", "500", "502", "503",
                          "504", "429", "AWS.SimpleQueueService.ServiceUnavailable"}
_CREDENTIALS = {
    "InvalidAccessKeyId": "the access key id is not known to {endpoint}: check it (rotated or deleted keys stop working)",
    "InvalidClientTokenId": "the access key id is not known to {endpoint}: check it (rotated or deleted keys stop working)",
    "UnrecognizedClientException": "the access key id is not known to {endpoint}: check it",
    "SignatureDoesNotMatch": "the secret access key does not belong to the access key id: check the secret",
    "IncompleteSignature": "the request signature is incomplete: check the secret access key",
    "ExpiredToken": "the session token has expired: refresh the temporary credentials",
    "ExpiredTokenException": "the session token has expired: refresh the temporary credentials",
    "TokenRefreshRequired": "the session token has expired: refresh the temporary credentials",
    "InvalidToken": "the session token is malformed or invalid: refresh the temporary credentials",
    "RequestExpired": "the request expired before it arrived: check this machine's clock",
    "RequestTimeTooSkewed": "this machine's clock is too far from the server's: fix the clock (NTP)",
    "AccessDenied": ("the credentials are valid but not allowed to {operation}: grant s3:ListBucket, s3:GetObject, "
                     "s3:GetObjectVersion, s3:GetObjectTagging, s3:GetBucketVersioning on the bucket (and "
                     "sqs:ReceiveMessage, sqs:DeleteMessage, sqs:GetQueueAttributes on the queue)"),
    "AccessDeniedException": ("the credentials are valid but not allowed to {operation}: grant sqs:ReceiveMessage, "
                              "sqs:DeleteMessage and sqs:GetQueueAttributes on the queue"),
    "AllAccessDisabled": "all access to this bucket is disabled by its owner",
}


#: An object (or the version asked for) that is not there (any more).
GONE = frozenset({"NoSuchKey", "NoSuchVersion", "404", "NotFound"})


class S3Unavailable(Transient):
    """S3 or SQS stayed throttled or unreachable for the whole retry budget."""


class ObjectAccessDenied(ConnectorError):
    """One object cannot be read (a bucket policy, a KMS key the credentials may not use):
    the object is skipped as unreadable, the sync goes on."""


#: Per-object calls: AccessDenied there is about the object, not the credentials.
OBJECT_OPERATIONS = frozenset({"GetObject", "get_object", "get_object_tagging", "head_object"})


class QueueMissing(ConnectorError):
    """The notification queue does not exist (watch falls back to reconciliation by listing)."""


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or "") or None
    return None


def http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def retry_after_s(exc: BaseException) -> float:
    response = getattr(exc, "response", None)
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) if isinstance(response, dict) else {}
    try:
        return max(float(headers.get("retry-after", 0)), 0.0)
    except (TypeError, ValueError):
        return 0.0  # an HTTP date: fall back to the budget's backoff


def is_transient(exc: BaseException) -> bool:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError, ReadTimeoutError

    if isinstance(exc, (BotoConnectionError, HTTPClientError, ReadTimeoutError, ConnectionError, TimeoutError)):
        return True
    code, status = error_code(exc), http_status(exc)
    return code in TRANSIENT or status == 429 or (status is not None and status >= 500)


class Client:
    """The S3 and SQS clients of one source, with retries and clear credential errors."""

    def __init__(self, config: S3Config, source_id: str, budget_s: float, *,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.config, self.source_id, self.budget_s = config, source_id, budget_s
        self.sleep, self.clock = sleep, clock
        self._s3: Any = None
        self._sqs: Any = None
        #: What the last call had to retry (tests, logs): [(operation, error code or type, delay s)].
        self.retries: list[tuple[str, str, float]] = []

    @property
    def endpoint(self) -> str:
        return self.config.endpoint_url or f"AWS ({self.config.region})"

    def _client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config as BotoConfig

        creds = resolve_credentials(self.config, self.source_id)
        session = boto3.session.Session(aws_access_key_id=creds.access_key_id,
                                        aws_secret_access_key=creds.secret_access_key,
                                        aws_session_token=creds.session_token, region_name=self.config.region)
        cfg = BotoConfig(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=60,
                         s3={"addressing_style": "path"} if self.config.endpoint_url else {},
                         user_agent_extra="ragstream")
        return session.client(service, endpoint_url=self.config.endpoint_url, config=cfg)

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = self._client("s3")
        return self._s3

    @property
    def sqs(self) -> Any:
        if self._sqs is None:
            self._sqs = self._client("sqs")
        return self._sqs

    def s3_call(self, operation: str, *, budget_s: float | None = None, **kwargs: Any) -> Any:
        return self.retrying(operation, lambda: getattr(self.s3, operation)(**kwargs), budget_s)

    def sqs_call(self, operation: str, *, budget_s: float | None = None, **kwargs: Any) -> Any:
        return self.retrying(operation, lambda: getattr(self.sqs, operation)(**kwargs), budget_s)

    def get_bytes(self, key: str, version_id: str | None) -> tuple[bytes, dict] | None:
        """The object's bytes and GetObject's answer (ETag, VersionId, ...); None if it is gone.
        Reading the body is inside the retry: a connection reset mid-object is retried too."""
        kwargs: dict[str, Any] = {"Bucket": self.config.bucket, "Key": key}
        if version_id and version_id != "null":
            kwargs["VersionId"] = version_id

        def get() -> tuple[bytes, dict]:
            resp = self.s3.get_object(**kwargs)
            return resp["Body"].read(), resp

        try:
            return self.retrying("GetObject", get)
        except Exception as exc:
            if error_code(exc) in GONE:
                return None
            raise

    def retrying(self, operation: str, fn: Callable[[], Any], budget_s: float | None = None) -> Any:
        """``fn()``: transient failures retried within the budget, refusals made clear."""
        from botocore.exceptions import NoCredentialsError, PartialCredentialsError

        budget = RetryBudget(self.budget_s if budget_s is None else budget_s, clock=self.clock)
        while True:
            try:
                return fn()
            except (NoCredentialsError, PartialCredentialsError):
                raise ConnectorError(
                    f"source {self.source_id!r}: no S3 credentials were found ({self.config.credential_origin()}); "
                    "name them in the sources file (access_key_id_env and secret_access_key_env, or "
                    "credentials_file)") from None
            except Exception as exc:  # noqa: BLE001 - sorted below
                self._refused(exc, operation)
                if not is_transient(exc):
                    raise
                if not budget.spend():
                    raise S3Unavailable(
                        f"source {self.source_id!r}: {operation} on {self.endpoint} kept failing for "
                        f"{budget.elapsed_s:.0f} s over {budget.attempts} attempt(s) ({reason(exc)}); the retry "
                        "budget (RAGSTREAM_RETRY_BUDGET_S) is spent: the next sync or reconciliation tries again"
                    ) from exc
                delay = max(budget.next_delay(), retry_after_s(exc))
                code = error_code(exc) or type(exc).__name__
                self.retries.append((operation, code, delay))
                log.warning("S3 call retried", source=self.source_id, operation=operation, error=code,
                            delay_s=round(delay, 2), attempt=budget.attempts)
                self.sleep(delay)

    def _refused(self, exc: BaseException, operation: str) -> None:
        code = error_code(exc)
        what = f"{operation} on bucket {self.config.bucket!r} at {self.endpoint}"
        if code == "AccessDenied" and operation in OBJECT_OPERATIONS:
            raise ObjectAccessDenied(f"access denied ({operation}): the credentials from "
                                     f"{self.config.credential_origin()} may not read this object") from None
        if code in _CREDENTIALS:
            hint = _CREDENTIALS[code].format(endpoint=self.endpoint, operation=what)
            raise ConnectorError(f"source {self.source_id!r}: S3 refused the credentials from "
                                 f"{self.config.credential_origin()} ({code}): {hint}") from None
        if code == "NoSuchBucket":
            raise ConnectorError(f"source {self.source_id!r}: the bucket {self.config.bucket!r} does not exist at "
                                 f"{self.endpoint}: check bucket, endpoint_url and region") from None
        if code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            raise QueueMissing(f"source {self.source_id!r}: the SQS queue {self.config.sqs_queue_url} does not "
                                 "exist: check sqs_queue_url (or remove it to reconcile by listing only)") from None
