"""A webhook receiver for bench/webhooks.py: verifies every request with the
`standardwebhooks` package and counts. ASGI, served by uvicorn on a loopback address.

    WEBHOOK_SECRET=whsec_… uvicorn webhook_receiver:app --host 127.0.0.2 --port N
"""

import json
import os

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

_webhook = Webhook(os.environ["WEBHOOK_SECRET"])
counts = {"verified": 0, "rejected": 0}


async def _body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body = await _body(receive)
    if scope["method"] == "GET":
        status, answer = 200, json.dumps(counts).encode()
    else:
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            _webhook.verify(body, headers)
            counts["verified"] += 1
            status, answer = 204, b""
        except WebhookVerificationError:
            counts["rejected"] += 1
            status, answer = 400, b"bad signature"
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": answer})
