"""Scripted approvers for `campaignflow demo`: people who answer gates the way a real team might.

They decide through `decide_and_resume`, the same path as `campaignflow approve`.
"""

from __future__ import annotations

import contextvars
import threading

from campaignflow import db
from campaignflow.approvals import pending_for

# The first draft of the first asset with two rounds gets changes requested once, as happens.
CHANGE_REQUEST = "Sharpen the headline: lead with what the reader gets, then the date."


class DemoApprovers:
    def __init__(self, campaign_id: str, pause: float, console) -> None:
        self.campaign_id, self.pause, self.console = campaign_id, pause, console
        self.stop = threading.Event()
        self.asked_for_changes = False
        self.thread = threading.Thread(target=contextvars.copy_context().run, args=(self._answer,), daemon=True)

    def __enter__(self) -> "DemoApprovers":
        # Import Prefect here, in the main thread: importing it in the thread while the main thread imports
        # the lifecycle flow made Prefect print "Failed to initialize plugins" (a half-imported module).
        from flows.gates import decide_and_resume

        self.decide_and_resume = decide_and_resume
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _decision_for(self, gate) -> tuple[str, str]:
        if gate.kind == "review" and gate.version == 1 and gate.round == 1 and not self.asked_for_changes:
            self.asked_for_changes = True
            return "request_changes", CHANGE_REQUEST
        return "approve", {"goals": "Goals are SMART and tied to pipeline. Go.",
                           "budget": "Within plan."}.get(gate.kind, "Looks good.")

    def _answer(self) -> None:
        while not self.stop.wait(self.pause):
            with db.session() as s:
                pending = pending_for(s, campaign_id=self.campaign_id)
            if not pending:
                continue
            gate, left = pending[0]
            outcome, comment = self._decision_for(gate)
            self.decide_and_resume(gate.id, left[0], outcome, comment, entry_point="demo")
            verb = {"approve": "approves", "request_changes": "requests changes on"}[outcome]
            self.console.print(f"          demo: {left[0]} {verb} gate #{gate.id}"
                               + (f': "{comment}"' if outcome != "approve" else ""), highlight=False)
