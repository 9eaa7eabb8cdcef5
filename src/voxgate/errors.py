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
