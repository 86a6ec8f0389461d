"""A real SMTP server for tests (aiosmtpd), on a free loopback port in a thread of the test
process. `reply(phase, rcpt, attempt)` decides each answer, so a test scripts 451s, 550s
or a worker kill; every accepted message is kept with the time it arrived."""

import email
import email.policy
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller

from tests.support import free_port

# aiosmtpd logs every command at INFO.
logging.getLogger("mail.log").setLevel(logging.WARNING)


@dataclass
class Received:
    mail_from: str
    rcpt: str
    data: bytes
    at: float

    def parsed(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


@dataclass
class SmtpServer:
    """`reply` gets ("RCPT" or "DATA", recipient, how many times this phase was seen for
    this recipient) and returns an SMTP reply, or None for the normal 250."""

    reply: Callable[[str, str, int], str | None] | None = None
    on_data: Callable[[str], None] | None = None
    accepted: list[Received] = field(default_factory=list)
    seen: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> "SmtpServer":
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def reset(self, reply: Any = None, on_data: Any = None) -> None:
        with self.lock:
            self.reply, self.on_data = reply, on_data
            self.accepted.clear()
            self.seen.clear()

    def _answer(self, phase: str, rcpt: str) -> str | None:
        with self.lock:
            self.seen[(phase, rcpt)] += 1
            count = self.seen[(phase, rcpt)]
        return self.reply(phase, rcpt, count) if self.reply else None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options):
        answer = self._answer("RCPT", address)
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any):
        rcpt = envelope.rcpt_tos[0]
        answer = self._answer("DATA", rcpt)
        if answer:
            return answer
        with self.lock:
            self.accepted.extend(
                Received(envelope.mail_from, to, envelope.content, time.time())
                for to in envelope.rcpt_tos
            )
        if self.on_data is not None:
            self.on_data(rcpt)
        return "250 2.0.0 Message accepted for delivery"

    def count(self) -> Counter:
        with self.lock:
            return Counter(message.rcpt for message in self.accepted)

    def messages(self, rcpt: str | None = None) -> list[Received]:
        with self.lock:
            return [m for m in self.accepted if rcpt is None or m.rcpt == rcpt]
