"""Internal error types. Each carries a DashScope error code; protocol adapters map them to wire shapes."""

from __future__ import annotations


class VoxgateError(Exception):
    """Base error: ``code`` is the DashScope error code, ``status`` the HTTP status to answer with."""

    code = "InternalError"
    status = 500

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidParameter(VoxgateError):
    """The request names a bad value; ``param`` says which field."""

    code = "InvalidParameter"
    status = 400


class PayloadTooLarge(InvalidParameter):
    """A request body or uploaded file is over its size limit."""

    status = 413


class ModelNotFound(VoxgateError):
    """The requested public model name is not in the catalog."""

    code = "Model.NotExist"
    status = 404


class InvalidApiKey(VoxgateError):
    code = "InvalidApiKey"
    status = 401


class Throttling(VoxgateError):
    """Rate limit hit or capacity full."""

    code = "Throttling"
    status = 429


class AudioError(InvalidParameter):
    """Audio could not be decoded or breaks a limit. ``reason`` is a short machine-readable tag."""

    def __init__(self, message: str, *, reason: str = "decode_failed", param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.reason = reason


class ModelUnavailable(VoxgateError):
    """Bundled weights are missing or corrupt."""

    code = "ServiceUnavailable"
    status = 503


class AccessDenied(VoxgateError):
    """The key is valid but may not do this."""

    code = "AccessDenied"
    status = 403


class UploadDenied(AccessDenied):
    """An upload form that is unsigned, tampered with, or whose policy has expired."""


class UploadMissing(InvalidParameter):
    """An ``oss://`` reference to no file this caller may use (expired, never uploaded, another key's)."""


class AlreadyExists(VoxgateError):
    """An upload key that is taken, with overwriting forbidden."""

    code = "FileAlreadyExists"
    status = 409


class ResultNotFound(VoxgateError):
    """A result file that does not exist or has expired."""

    code = "ResultNotFound"
    status = 404


class UnsupportedOperation(InvalidParameter):
    """A request that cannot apply in the current state (e.g. canceling a finished task)."""

    code = "UnsupportedOperation"


class FetchError(VoxgateError):
    """A job's file URL could not be fetched. ``code`` is the per-file failure code."""

    code = "InvalidFile.DownloadFailed"
    status = 400


class FetchForbidden(FetchError):
    """The URL points somewhere this server refuses to fetch from."""

    code = "InvalidFile.URLNotAllowed"


class FetchTooLarge(FetchError):
    code = "InvalidFile.TooLarge"


class StoreUnreadable(RuntimeError):
    """The job database exists but cannot be read (corrupt or not a database); nothing was changed."""
