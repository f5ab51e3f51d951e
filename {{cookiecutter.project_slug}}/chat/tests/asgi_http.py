"""An HTTP request through an ASGI application, in the test's event loop: what a server would
hand it, without the server. Django's ASGI handler then serves the request as on a server,
on a thread of its own (the test client's handlers do not)."""

import asyncio


async def over_asgi(application, method: str, path: str, headers: list, body: bytes = b"") -> tuple[int, dict, str]:
    """The response's status, headers (names in lower case) and text."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 443),
    }
    request_body, sent = [{"type": "http.request", "body": body, "more_body": False}], []

    async def receive():
        if request_body:
            return request_body.pop()
        await asyncio.Event().wait()  # the client stays connected

    async def send(message):
        sent.append(message)

    await application(scope, receive, send)
    start = next(message for message in sent if message["type"] == "http.response.start")
    content = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return (
        start["status"],
        {name.decode().lower(): value.decode() for name, value in start["headers"]},
        content.decode(),
    )
