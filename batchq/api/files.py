"""The routes of OpenAI's Files API: upload (multipart, streamed to disk), list, retrieve,
download (streamed) and delete. Storage is :mod:`batchq.api.filestore`'s."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, web

from batchq.api.filestore import MAX_LIST, FileStore, clean_filename, new_file_id
from batchq.api.openai_objects import ApiError, file_object, list_page, query_int

__all__ = ["UPLOAD_PURPOSES", "add_file_routes"]

# What a client may upload: input files of batches. batch_output files are the server's own.
UPLOAD_PURPOSES = frozenset({"batch"})
_MAX_FIELD = 256
_CHUNK = 1 << 16


async def _field(part: BodyPartReader) -> str:
    """A small form field's text; 400 if it is not small."""
    data = bytearray()
    while chunk := await part.read_chunk(_MAX_FIELD + 1):
        data += chunk
        if len(data) > _MAX_FIELD:
            raise ApiError(400, f"the form field {part.name!r:.40} is too long", param=part.name)
    return data.decode("utf-8", "replace").strip()


def _check_purpose(purpose: str | None) -> str:
    if purpose not in UPLOAD_PURPOSES:
        raise ApiError(
            400,
            f"purpose must be one of {', '.join(sorted(UPLOAD_PURPOSES))}, got {purpose!r:.40}",
            param="purpose",
        )
    return purpose


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(_CHUNK):
        yield chunk


def add_file_routes(router: web.UrlDispatcher, files: FileStore) -> None:
    async def upload(request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            raise ApiError(400, "POST /v1/files takes multipart/form-data with file and purpose")
        reader = await request.multipart()
        purpose: str | None = None
        file_id: str | None = None
        filename = ""
        size = 0
        try:
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise ApiError(400, "nested multipart bodies are not supported")
                if part.name == "purpose":
                    purpose = await _field(part)
                elif part.name == "file" and file_id is None:
                    if purpose is not None:
                        _check_purpose(purpose)  # refused before the upload, not after
                    filename = clean_filename(part.filename)
                    file_id = new_file_id()
                    size = await files.receive(file_id, _chunks(part))
                else:
                    await part.release()  # other fields (expires_after) are read past
            if file_id is None:
                raise ApiError(400, "the form has no file field", param="file")
            purpose = _check_purpose(purpose)
            meta = await files.commit(file_id, filename=filename, purpose=purpose, size=size)
        except ValueError as e:  # a malformed form (aiohttp's multipart reader)
            if file_id is not None:
                files.path(file_id).unlink(missing_ok=True)
            raise ApiError(400, f"not a valid multipart form: {e}"[:300]) from None
        except BaseException:
            if file_id is not None:
                files.path(file_id).unlink(missing_ok=True)
            raise
        return web.json_response(file_object(file_id, meta))

    async def listing(request: web.Request) -> web.Response:
        q = request.query
        order = q.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ApiError(400, 'order must be "asc" or "desc"', param="order")
        rows, more = await files.page(
            after=q.get("after") or None,
            limit=query_int(q, "limit", MAX_LIST, 1, MAX_LIST),
            descending=order == "desc",
            purpose=q.get("purpose") or None,
        )
        return web.json_response(list_page([file_object(i, m) for i, m in rows], more))

    async def retrieve(request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        return web.json_response(file_object(file_id, await files.meta(file_id)))

    async def content(request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        meta = await files.meta(file_id)
        chunks = files.chunks(file_id)
        first = await anext(chunks, b"")  # a missing file is an error before the headers
        response = web.StreamResponse(
            headers={"Content-Type": "application/octet-stream"},
        )
        response.content_length = int(meta.get("bytes", 0))
        await response.prepare(request)
        if first:
            await response.write(first)
            async for chunk in chunks:
                await response.write(chunk)
        await response.write_eof()
        return response

    async def delete(request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        await files.delete(file_id)
        return web.json_response({"id": file_id, "object": "file", "deleted": True})

    router.add_post("/files", upload)
    router.add_get("/files", listing)
    router.add_get("/files/{file_id}", retrieve)
    router.add_get("/files/{file_id}/content", content)
    router.add_delete("/files/{file_id}", delete)
