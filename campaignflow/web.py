"""`campaignflow web`: one-click decision pages for chat and email, and a small JSON API.

GET /decide/{token} shows the request and one button; POST records the
decision. (A GET never decides: chat unfurlers and mail scanners open links.)
The JSON API needs `Authorization: Bearer $CAMPAIGNFLOW_API_TOKEN`.
Every decision goes through `campaignflow.approvals.decide`, then the
waiting flow is resumed.
"""

from __future__ import annotations

import hmac
import html
import os

from fastapi import FastAPI, Form, Header, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from campaignflow import db
from campaignflow.approvals import decide_by_link
from campaignflow.errors import UserError
from campaignflow.signing import LinkRefused, verify
from campaignflow.store import find_gate

app = FastAPI(title="campaignflow approvals", version="1")
LABELS = {"approve": "Approve", "request_changes": "Request changes", "reject": "Reject"}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(status_code=status, content=f"""<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}
pre{{white-space:pre-wrap;background:#f6f6f6;padding:1rem;border-radius:6px}}
button{{font-size:1.1rem;padding:.7rem 1.4rem;border-radius:6px;border:0;background:#1f6feb;color:#fff}}
textarea{{width:100%;min-height:5rem}}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>""")


def _refusal(exc: UserError, status: int = 400) -> HTMLResponse:
    return _page("Link refused", f"<p>{html.escape(str(exc))}</p>", getattr(exc, "status", status))


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
    except UserError as exc:
        return _refusal(exc)
    if gate.status != "open":
        return _page("Already decided", f"<p>Gate #{gate.id} is already closed as "
                     f"<b>{html.escape(gate.status.replace('_', ' '))}</b>. Nothing more to do.</p>", 409)
    amount = f"<p><b>Amount:</b> {gate.amount:,.2f}</p>" if gate.amount else ""
    needs_comment = claim.decision != "approve"
    comment = (f'<p><label>Comment ({"required" if needs_comment else "optional"})<br>'
               f'<textarea name="comment" {"required" if needs_comment else ""}></textarea></label></p>')
    body = (f"<p>{html.escape(claim.person)}, you are asked to decide gate #{gate.id}.</p>{amount}"
            f"<pre>{html.escape(gate.description)}</pre>"
            f'<form method="post">{comment}<button type="submit">{LABELS[claim.decision]}</button></form>')
    return _page(gate.title, body)


@app.post("/decide/{token}", response_class=HTMLResponse)
def record_decision(token: str, comment: str = Form("")) -> HTMLResponse:
    try:
        claim = verify(token)
        with db.session(write=True) as s:
            result = decide_by_link(s, claim, comment)
    except LinkRefused as exc:
        return _refusal(exc)
    except UserError as exc:
        return _page("Not recorded", f"<p>{html.escape(str(exc))}</p>", 409)
    _resume(result)
    state = ("The gate is now <b>" + html.escape(result.status.replace("_", " ")) + "</b>."
             if result.status != "open" else f"Still waiting on {html.escape(', '.join(result.waiting_on))}.")
    return _page("Thank you", f"<p>Your decision on gate #{result.gate_id} is recorded. {state}</p>")


# -- JSON API ------------------------------------------------------------------------------------

class DecisionIn(BaseModel):
    person: str
    decision: str
    comment: str = ""


def _authorise(authorization: str | None) -> None:
    token = os.environ.get("CAMPAIGNFLOW_API_TOKEN")
    if not token:
        raise HTTPException(503, "the JSON API is off: set CAMPAIGNFLOW_API_TOKEN on the server to turn it on")
    if not authorization or not hmac.compare_digest(authorization, f"Bearer {token}"):
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
        raise HTTPException(409 if "already" in str(exc) else 400, str(exc)) from None
    return {"gate": result.gate_id, "status": result.status, "recorded": result.recorded,
            "waiting_on": result.waiting_on, "resumed": resumed}
