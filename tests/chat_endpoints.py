"""Real local endpoints for apprise to deliver to, which the tests read back.

- `ChatServer`: an HTTP server taking apprise `json://` posts (Slack-, Teams-,
  Mattermost-style webhooks all boil down to an HTTP POST); it can answer 503
  for a while, or stop listening altogether, to play an outage, and refuses
  requests above `max_body` bytes with 413, as chat services do.
- `MailServer`: an SMTP server (aiosmtpd) for apprise `mailto://`.
"""

from __future__ import annotations

import email
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ChatServer:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.received: list[dict] = []
        self.paths: list[str] = []
        self.failing_status: int | None = None
        self.max_body: int | None = None  # larger requests get 413 Payload Too Large, as real chat services answer
        self.refused = 0  # requests answered with an error while failing or too large
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str = "hook", secret: str = "") -> str:
        auth = f"cf:{secret}@" if secret else ""
        return f"json://{auth}127.0.0.1:{self.port}/{path}"

    def start(self) -> "ChatServer":
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with outer._lock:
                    status = outer.failing_status
                    if status is None and outer.max_body is not None and length > outer.max_body:
                        status = 413
                    if status is None:
                        outer.received.append(json.loads(raw or b"{}"))
                        outer.paths.append(self.path)
                    else:
                        outer.refused += 1
                self.send_response(status or 200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):  # keep test output clean
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def messages(self) -> list[dict]:
        with self._lock:
            return list(self.received)

    def titles(self) -> list[str]:
        return [m.get("title", "") for m in self.messages()]

    def __enter__(self) -> "ChatServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class MailServer:
    def __init__(self):
        self.port = free_port()
        self.received: list[email.message.Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self._controller = None

    def url(self, to: str, user: str = "", password: str = "") -> str:
        auth = f"{user}:{password}@" if user else ""
        return (f"mailto://{auth}127.0.0.1:{self.port}?to={to}&from=campaignflow@agency.example"
                f"&mode=insecure&smtp=127.0.0.1")

    def start(self) -> "MailServer":
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                outer.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                outer.received.append(email.message_from_bytes(envelope.original_content or envelope.content))
                return "250 OK"

        def accept_any(server, session, envelope, mechanism, auth_data):
            return AuthResult(success=True)

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                      authenticator=accept_any, auth_require_tls=False)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def subjects(self) -> list[str]:
        return [str(email.header.make_header(email.header.decode_header(m["Subject"] or ""))) for m in self.received]

    def bodies(self) -> list[str]:
        out = []
        for msg in self.received:
            part = next((p for p in msg.walk() if p.get_content_type() == "text/plain"), msg)
            out.append(part.get_payload(decode=True).decode("utf-8", "replace"))
        return out

    def __enter__(self) -> "MailServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- campaign helpers for the notification tests -------------------------------------------------

def notify_spec(notifications: dict | None = None, channels: dict[str, str] | None = None, **changes) -> dict:
    """The b2b-webinar example starting next month, with a notifications section and per-person channels."""
    from conftest import future_spec

    data = future_spec(**changes)
    for person in data["people"]:
        if channels and person["handle"] in channels:
            person["channel"] = channels[person["handle"]]
    data["notifications"] = notifications if notifications is not None else {}
    return data


def register(data: dict, url: str | None = None, spec_dir: str = ""):
    """Store the spec as a campaign (as `campaignflow run` does, without running it); returns its id.

    `spec_dir` stands for the folder the spec file was in (relative paths in it, like templates, start there)."""
    import datetime as dt

    import yaml

    from campaignflow import db, store
    from campaignflow.spec import validate_spec_data

    spec = validate_spec_data(data, today=dt.date.min)
    with db.session(url) as s:
        store.register_campaign(s, spec, yaml.safe_dump(data, sort_keys=False), spec_dir)
    return spec.id


def open_gate(campaign_id: str, key: str, approvers: list[str], *, kind: str = "goals", title: str | None = None,
              opened_at=None, due_at=None, submitted_by: str = "maria", subject: str = "", url: str | None = None) -> int:
    from campaignflow import db, store

    utc = __import__("datetime").timezone.utc
    due_at = due_at.astimezone(utc) if due_at is not None else None  # the store keeps UTC
    opened_at = opened_at.astimezone(utc) if opened_at is not None else None
    with db.session(url) as s:
        gate = store.open_gate(s, key=f"{campaign_id}/{key}", campaign_id=campaign_id, kind=kind,
                               title=title or f"Approve {key}", approvers=approvers, submitted_by=submitted_by,
                               subject=subject, due_at=due_at)
        if opened_at is not None:
            gate.opened_at = opened_at
            s.add(gate)
        s.flush()
        return gate.id


def set_deliverable(campaign_id: str, key: str, *, due=None, status: str | None = None, url: str | None = None) -> None:
    from sqlmodel import select

    from campaignflow import db, models as m

    with db.session(url) as s:
        row = s.exec(select(m.Deliverable).where(m.Deliverable.campaign_id == campaign_id, m.Deliverable.key == key)).one()
        if due is not None:
            row.due = due
        if status is not None:
            row.status = status
        s.add(row)


def outbox_rows(url: str | None = None):
    from sqlmodel import select

    from campaignflow import db
    from campaignflow.models_notify import OutboxMessage

    with db.session(url) as s:
        return list(s.exec(select(OutboxMessage).order_by(OutboxMessage.id)))


def write_spec_file(path, data: dict):
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
