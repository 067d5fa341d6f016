"""Receiving a multipart/form-data upload as it streams in, within the size limit.

FastAPI's ``UploadFile`` parses (and spools) the whole body before a route's login checks run.
The upload routes take the bare request instead, so their checks run before any of the body
is read; the body is then parsed here chunk by chunk (python-multipart's streaming parser) into
an :class:`~pipeline.intake.Upload`, and refused as soon as it passes the limit.
"""

from __future__ import annotations

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from pipeline.intake import Accepted, Upload, UploadError, too_large
from pipeline.settings import Settings

FILE_FIELD = "file"
FORM_OVERHEAD_BYTES = 64 * 1024  # boundaries and part headers around the file, and other small fields
UPLOAD_BODY = {  # the request body in the OpenAPI schema, since the routes read it themselves
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {FILE_FIELD: {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


async def receive_upload(request: Request, settings: Settings) -> Accepted:
    """Stream the ``file`` field of a multipart/form-data body into the bucket.

    A declared ``Content-Length`` over the limit is refused before anything is read; whatever
    the header says, reading stops at the limit (413). Raises UploadError when refused.
    """
    limit = settings.score.max_upload_mb * 1024 * 1024 + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(settings)
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise UploadError(f"send the file as multipart/form-data, in the field '{FILE_FIELD}'", status=400)
    part = _FilePart()
    parser = MultipartParser(options[b"boundary"], part.callbacks())
    received = 0
    with await run_in_threadpool(Upload, settings) as upload:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise too_large(settings)
            try:
                parser.write(chunk)
            except MultipartParseError as error:
                raise UploadError(f"malformed multipart/form-data body: {error}", status=400) from None
            if part.pending:
                data = b"".join(part.pending)
                part.pending.clear()
                await run_in_threadpool(upload.write, data)  # file writes off the event loop
        if part.name is None or not part.complete:
            raise UploadError(f"no complete file in the form field '{FILE_FIELD}'", status=400)
        return await run_in_threadpool(upload.finish, part.name)


class _FilePart:
    """python-multipart callbacks that keep the data of the ``file`` field and drop other fields."""

    def __init__(self) -> None:
        self.name: str | None = None  # the client's file name, once the part's headers are in
        self.complete = False
        self.pending: list[bytes] = []  # file data parsed but not yet written
        self._in_file = False
        self._header, self._value, self._disposition = b"", b"", b""

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._disposition, self._in_file = b"", False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if options.get(b"name") != FILE_FIELD.encode() or b"filename" not in options:
            return
        if self.name is not None:
            raise UploadError("send one file per upload", status=400)
        self.name = options[b"filename"].decode("utf-8", "replace") or "upload"
        self._in_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.pending.append(data[start:end])

    def _part_end(self) -> None:
        if self._in_file:
            self.complete, self._in_file = True, False
