"""`campaignflow web`: one-click decision pages for chat and email, and a small JSON API.

GET /decide/{token} shows the request and one button; POST records the
decision. (A GET never decides: chat unfurlers and mail scanners open links.)
The JSON API needs `Authorization: Bearer $CAMPAIGNFLOW_API_TOKEN`.
Every decision goes through `campaignflow.approvals.decide`, then the
waiting flow is resumed. A request body larger than BODY_LIMIT gets 413
before anything reads it.
"""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Form, Header, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from campaignflow import db, settings
from campaignflow.approvals import (TEXT_LIMIT, VERBS, closed_text, decide_by_link, decided_by, undecided_seats,
                                    waiting_on)
from campaignflow.errors import UserError
from campaignflow.presentation import render_page
from campaignflow.signing import LinkRefused, verify
from campaignflow.store import find_gate, gate_decisions

# Room for a comment at TEXT_LIMIT characters, each up to 12 bytes once form- or JSON-encoded, and the rest.
BODY_LIMIT = 64 * 1024  # bytes
LABELS = {"approve": "Approve", "request_changes": "Request changes", "reject": "Reject"}


class BodySizeLimit:
    """Answer 413 to a request body over `limit` bytes, declared (Content-Length) or streamed (chunked)."""

    def __init__(self, app, limit: int = BODY_LIMIT):
        self.app, self.limit = app, limit

    def _refusal(self, size: str) -> JSONResponse:
        return JSONResponse({"detail": f"the request body is {size} bytes; the limit is {self.limit:,}"}, 413)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit():
            return await JSONResponse({"detail": "the Content-Length header is not a number"}, 400)(scope, receive, send)
        if int(declared) > self.limit:
            return await self._refusal(f"{int(declared):,}")(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # raised inside the app, which answers it like any HTTPException
                raise HTTPException(413, f"the request body is over {self.limit:,} bytes; the limit is {self.limit:,}")
            return message

        await self.app(scope, counted_receive, send)


# No redirect from "/decide/x/" to "/decide/x": a link token never ends in a slash, and a 307 to another URL
# is no answer to a refused link (a token holding an encoded "/" arrives as such a path).
app = FastAPI(title="campaignflow approvals", version="1", redirect_slashes=False)
app.add_middleware(BodySizeLimit)


@app.exception_handler(RequestValidationError)
async def _invalid_request(request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each wrong field. FastAPI's own answer echoes the input back, and fails (500) on input
    that JSON cannot carry out again, such as the -Infinity Python's JSON reader accepts."""
    problems = "; ".join(f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors())
    return JSONResponse({"detail": problems}, 422)


def _page(template: str, status: int = 200, **context) -> HTMLResponse:
    """A page from campaignflow/templates/pages/ (autoescaped: what people typed shows as text)."""
    return HTMLResponse(status_code=status, content=render_page(template, **context))


def _message(title: str, text: str, status: int) -> HTMLResponse:
    return _page("message.j2", status, title=title, text=text)


def _refusal(exc: UserError, status: int = 400) -> HTMLResponse:
    return _message("Link refused", str(exc), getattr(exc, "status", status))


def _resume(result) -> None:
    from flows.gates import resume_after

    resume_after(result)


@app.get("/decide/{token}", response_class=HTMLResponse)
def show_decision(token: str) -> HTMLResponse:
    try:
        claim = verify(token)
        with db.session() as s:
            from campaignflow import models as m

            if s.get(m.UsedLink, claim.nonce) is not None:
                raise LinkRefused("This link has already been used. Each link decides once.", 409)
            gate = find_gate(s, claim.gate_id)
            decisions = gate_decisions(s, gate.id)
            seats = undecided_seats(s, gate, decisions, claim.person)
    except UserError as exc:
        return _refusal(exc)
    if gate.status != "open":
        return _page("gate_closed.j2", 409, gate_id=gate.id, outcome=closed_text(gate, decisions))
    mine = decided_by(decisions, claim.person)
    if mine and not seats:
        return _page("already_decided.j2", 409, already=_already(mine[0], gate.id), gate_status=gate.status,
                     waiting=waiting_on(gate, decisions))
    return _page("decide.j2", title=gate.title, gate=gate, person=claim.person,
                 others=[seat for seat in seats if seat != claim.person], needs_comment=claim.decision != "approve",
                 text_limit=TEXT_LIMIT, label=LABELS[claim.decision])


def _already(decision, gate_id: int) -> str:
    return (f"{decision.decided_by or decision.person} already {VERBS[decision.outcome]} gate #{gate_id} "
            f"at {decision.decided_at:%Y-%m-%d %H:%M} UTC")


@app.post("/decide/{token}", response_class=HTMLResponse)
def record_decision(token: str, comment: str = Form("")) -> HTMLResponse:
    try:
        claim = verify(token)
        with db.session(write=True) as s:
            result = decide_by_link(s, claim, comment)
    except LinkRefused as exc:
        return _refusal(exc)
    except UserError as exc:
        return _message("Not recorded", str(exc), getattr(exc, "status", 409))
    _resume(result)
    if not result.recorded:  # a second link for a decision already on record: say so, never "recorded"
        return _message("Nothing new recorded", f"Nothing new was recorded: {result.already}.", 200)
    return _page("thanks.j2", gate_id=result.gate_id, others=[seat for seat in result.seats if seat != claim.person],
                 gate_status=result.status, waiting=result.waiting_on)


# -- JSON API ------------------------------------------------------------------------------------

class DecisionIn(BaseModel):
    person: str
    decision: str
    comment: str = ""


def _authorise(authorization: str | None) -> None:
    token = settings.get().api_token
    token = token.get_secret_value() if token else ""
    if not token:
        raise HTTPException(503, "the JSON API is off: set CAMPAIGNFLOW_API_TOKEN on the server to turn it on")
    # Compared as bytes: a header may carry any byte (Starlette decodes it as latin-1), and
    # compare_digest refuses text with non-ASCII characters.
    sent = (authorization or "").encode("latin-1", "replace")
    if not sent or not hmac.compare_digest(sent, f"Bearer {token}".encode()):
        raise HTTPException(401, "missing or wrong bearer token")


@app.get("/api/health")
def health() -> dict:
    return {"ok": True}


@app.get("/api/approvals")
def api_approvals(person: str | None = None, authorization: str | None = Header(None)) -> list[dict]:
    _authorise(authorization)
    from campaignflow.status import pending_approvals

    with db.session() as s:
        return pending_approvals(s, person)


@app.post("/api/gates/{gate}/decisions")
def api_decide(gate: str, body: DecisionIn, authorization: str | None = Header(None)) -> dict:
    _authorise(authorization)
    from flows.gates import decide_and_resume

    try:
        result, resumed = decide_and_resume(gate, body.person, body.decision, body.comment, entry_point="api")
    except UserError as exc:
        raise HTTPException(getattr(exc, "status", 409 if "already" in str(exc) else 400), str(exc)) from None
    return {"gate": result.gate_id, "status": result.status, "recorded": result.recorded,
            "decided_for": list(result.seats), "already": result.already,
            "waiting_on": result.waiting_on, "resumed": resumed}
