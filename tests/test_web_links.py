"""One-click decision links and the JSON API, through a real HTTP server (uvicorn) on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

import pytest
import requests
import yaml
from sqlmodel import select

from campaignflow import db, lifecycle, models as m, store
from campaignflow.signing import secret, sign, verify
from campaignflow.spec import validate_spec_data
from conftest import ROOT, future_spec, serve_web


@pytest.fixture
def web(home, monkeypatch):
    with serve_web(monkeypatch) as base:
        yield base


@pytest.fixture
def budget_gate(home):
    data = future_spec()
    spec = validate_spec_data(data)
    with db.session() as s:
        store.register_campaign(s, spec, yaml.safe_dump(data), ROOT)
        return lifecycle.next_plan_gate(s, spec.id, "budget")  # approvers priya and felix, policy all


def test_link_shows_the_request_then_decides_once(web, budget_gate):
    from campaignflow.links import approval_link

    link = approval_link(budget_gate.id, "priya")
    assert link.startswith(web + "/decide/")
    page = requests.get(link, timeout=10)
    assert page.status_code == 200 and "28,700.00" in page.text and "Approve</button>" in page.text
    with db.session() as s:
        assert store.gate_decisions(s, budget_gate.id) == []  # looking never decides
    done = requests.post(link, data={"comment": "Fine by me"}, timeout=10)
    assert done.status_code == 200 and "Still waiting on felix" in done.text
    again = requests.post(link, timeout=10)
    assert again.status_code == 409 and "already been used" in again.text
    assert requests.get(link, timeout=10).status_code == 409
    with db.session() as s:
        [decision] = store.gate_decisions(s, budget_gate.id)
    assert (decision.person, decision.entry_point, decision.comment) == ("priya", "web", "Fine by me")


def test_tampered_expired_and_foreign_links_are_refused(web, budget_gate):
    good = sign(budget_gate.id, "felix")
    body, signature = good.split(".")
    forged = sign(budget_gate.id, "tom").split(".")[0] + "." + signature
    cases = [
        (f"{web}/decide/{forged}", 403, "altered"),
        (f"{web}/decide/{body}.AAAA", 403, "altered"),
        (f"{web}/decide/garbage", 400, "incomplete"),
        (f"{web}/decide/{sign(budget_gate.id, 'felix', ttl=-5)}", 410, "expired"),
    ]
    for url, status, words in cases:
        for response in (requests.get(url, timeout=10), requests.post(url, timeout=10)):
            assert response.status_code == status and words in response.text, (url, response.text)
    not_approver = requests.post(f"{web}/decide/{sign(budget_gate.id, 'tom')}", timeout=10)
    assert not_approver.status_code == 409 and "tom is not an approver" in not_approver.text
    with db.session() as s:
        assert store.gate_decisions(s, budget_gate.id) == []
        assert s.exec(select(m.UsedLink)).all() == []  # a refused decision does not use up the link


def test_reject_link_needs_a_comment(web, budget_gate):
    link = f"{web}/decide/{sign(budget_gate.id, 'felix', 'reject')}"
    assert "required" in requests.get(link, timeout=10).text
    refused = requests.post(link, data={"comment": ""}, timeout=10)
    assert refused.status_code == 409 and "a comment is required" in refused.text
    done = requests.post(link, data={"comment": "Media is 60 % of the budget"}, timeout=10)
    assert done.status_code == 200 and "rejected" in done.text



def _link_signed_before_itsdangerous(gate_id: int, person: str, expires: float) -> str:
    """A link as campaignflow signed them by hand until 2026-11: base64url(json).base64url(HMAC-SHA256)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    payload = {"g": gate_id, "p": person, "d": "approve", "e": int(expires), "n": secrets.token_urlsafe(12)}
    body = b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{b64(hmac.new(secret(), body.encode(), hashlib.sha256).digest())}"


def test_a_link_sent_before_the_signing_change_still_decides_until_it_expires(web, budget_gate):
    old = _link_signed_before_itsdangerous(budget_gate.id, "priya", time.time() + 6 * 24 * 3600)
    assert verify(old).person == "priya"
    done = requests.post(f"{web}/decide/{old}", data={"comment": "from last week's reminder"}, timeout=10)
    assert done.status_code == 200 and "Still waiting on felix" in done.text
    again = requests.post(f"{web}/decide/{old}", timeout=10)
    assert again.status_code == 409 and "already been used" in again.text  # single use, like a new link
    body, _ = old.split(".")
    for token, status, text in [
        (_link_signed_before_itsdangerous(budget_gate.id, "felix", time.time() - 5), 410, "expired"),
        (f"{body}.AAAA", 403, "altered"),
    ]:
        response = requests.get(f"{web}/decide/{token}", timeout=10)
        assert response.status_code == status and text in response.text, (token, response.status_code)


def test_json_api_needs_its_token(web, budget_gate, monkeypatch):
    url = f"{web}/api/gates/{budget_gate.id}/decisions"
    body = {"person": "priya", "decision": "approve"}
    assert requests.post(url, json=body, timeout=10).status_code == 503  # off until a token is set
    monkeypatch.setenv("CAMPAIGNFLOW_API_TOKEN", "s3cret")
    assert requests.post(url, json=body, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    listed = requests.get(f"{web}/api/approvals", params={"person": "felix"}, headers=auth, timeout=10).json()
    assert [g["gate"] for g in listed] == [budget_gate.id]
    first = requests.post(url, json=body, headers=auth, timeout=10)
    assert first.status_code == 200 and first.json()["recorded"] and first.json()["status"] == "open"
    retry = requests.post(url, json=body, headers=auth, timeout=10)  # a retried request records nothing more
    assert retry.status_code == 200 and not retry.json()["recorded"]
    wrong = requests.post(url, json={"person": "tom", "decision": "approve"}, headers=auth, timeout=10)
    assert wrong.status_code == 400 and "tom is not an approver" in wrong.json()["detail"]
