"""Ledger rules of customer service: tickets with their service levels (and the
escalation of late ones at the start of a block), verified reviews, and loyalty programs
shared by partner orgs. Each rule checks first and writes only when valid."""
from __future__ import annotations

from .canonical import INT_MAX
from .rulectx import VALID, Ctx, by_customer, customer, is_customer
from .statekeys import deadline_of, k_customer, k_deadline, k_loyalty, k_program, k_review, k_ticket
from .tx import Tx

BENEFITS = "dpv:PersonalisedBenefits"   # the purpose under which a partner may issue points


def set_deadline(ctx: Ctx, t: dict, tid: str, kind: str, due: int | None) -> None:
    """Replace the ticket's `kind` deadline (first_response or resolution) by `due`."""
    old = t["deadlines"].get(kind)
    if old is not None:
        ctx.st.put(k_deadline(old, tid, kind), None)
    t["deadlines"] = {**t["deadlines"], kind: due} if due is not None else \
        {k: v for k, v in t["deadlines"].items() if k != kind}
    if due is not None:
        ctx.st.put(k_deadline(due, tid, kind), {"ticket_id": tid, "kind": kind})


def ticket_open(ctx: Ctx, tx: Tx) -> str:
    p = tx.payload
    tid = p["ticket_id"]
    if ctx.st.get(k_ticket(tid)) is not None:
        return "ticket_exists"
    cust, err = customer(ctx, p["customer_id"])
    if err:
        return err
    if is_customer(tx, cust):
        org = cust["owner"]
    elif ctx.staff(tx, tx.org) and (tx.org == cust["owner"] or ctx.consent(p["customer_id"], tx.org)):
        org = tx.org
    else:
        return "forbidden"
    levels = ctx.service_levels(org)
    t = {"org": org, "customer_id": p["customer_id"], "channel": p["channel"], "status": "open",
         "escalated": [], "deadlines": {}, "review_id": None,
         "timeline": [{"height": ctx.height, "ts": ctx.ts, "status": "open", "note_hash": p["subject_hash"],
                       "by": tx.signer}]}
    set_deadline(ctx, t, tid, "first_response", ctx.ts + levels.first_response_ms)
    set_deadline(ctx, t, tid, "resolution", ctx.ts + levels.resolution_ms)
    ctx.st.put(k_ticket(tid), t)
    return VALID


def ticket_update(ctx: Ctx, tx: Tx) -> str:
    """The ticket's org moves it through any status; the customer may only accept a
    resolved ticket (`closed`) or reopen it (`open`). A reply of the org ends the wait for
    a first response; resolving or closing ends the one for resolution; reopening starts
    that one again."""
    p = tx.payload
    tid, status = p["ticket_id"], p["status"]
    t = ctx.st.get(k_ticket(tid))
    if t is None:
        return "unknown_ticket"
    cust = ctx.st.get(k_customer(t["customer_id"]))
    by_customer = cust is not None and is_customer(tx, cust)
    if not (ctx.staff(tx, t["org"]) or by_customer):
        return "forbidden"
    if t["status"] == "closed":
        return "ticket_closed"
    if by_customer and not (t["status"] == "resolved" and status in ("open", "closed")):
        return "forbidden"
    t = {**t, "status": status, "timeline": t["timeline"] + [
        {"height": ctx.height, "ts": ctx.ts, "status": status, "note_hash": p["note_hash"], "by": tx.signer}]}
    if not by_customer:
        set_deadline(ctx, t, tid, "first_response", None)
    if status in ("resolved", "closed"):
        set_deadline(ctx, t, tid, "resolution", None)
    elif status == "open" and "resolution" not in t["deadlines"]:
        set_deadline(ctx, t, tid, "resolution", ctx.ts + ctx.service_levels(t["org"]).resolution_ms)
    ctx.st.put(k_ticket(tid), t)
    return VALID


def escalate(ctx: Ctx, due_keys: list[bytes]) -> None:
    """Every ticket whose deadline the block's timestamp has passed is escalated."""
    for key in due_keys:
        due, tid, kind = deadline_of(key)
        t = ctx.st.get(k_ticket(tid))
        ctx.st.put(key, None)
        if t is None:
            continue
        deadlines = {k: v for k, v in t["deadlines"].items() if k != kind}
        ctx.st.put(k_ticket(tid), {**t, "deadlines": deadlines, "escalated": t["escalated"] + [kind],
                                   "timeline": t["timeline"] + [{"height": ctx.height, "ts": ctx.ts,
                                                                 "status": "escalated", "missed": kind,
                                                                 "due": due}]})
        ctx.event("ticket", ticket_id=tid, org=t["org"], customer_id=t["customer_id"], status="escalated",
                  missed=kind, due=due)


def review_post(ctx: Ctx, tx: Tx) -> str:
    p = tx.payload
    _, err = by_customer(ctx, tx)
    if err:
        return err
    t = ctx.st.get(k_ticket(p["ticket_id"]))
    if t is None:
        return "unknown_ticket"
    if t["customer_id"] != p["customer_id"] or t["org"] != p["org"]:
        return "forbidden"
    if t["status"] not in ("resolved", "closed"):
        return "ticket_not_resolved"
    if t.get("review_id") is not None or ctx.st.get(k_review(p["org"], p["review_id"])) is not None:
        return "review_exists"
    ctx.st.put(k_review(p["org"], p["review_id"]), {
        "customer_id": p["customer_id"], "ticket_id": p["ticket_id"], "rating": p["rating"],
        "text_hash": p["text_hash"], "height": ctx.height, "ts": ctx.ts, "tx_id": tx.tx_id})
    ctx.st.put(k_ticket(p["ticket_id"]), {**t, "review_id": p["review_id"]})
    return VALID


# -- loyalty programs shared by partner orgs ---------------------------------------------------
def loyalty_program(ctx: Ctx, tx: Tx) -> str:
    p = tx.payload
    if ctx.role(tx.signer, tx.org) != "admin":
        return "forbidden"
    if any(o not in ctx.cs.orgs for o in p["partners"]):
        return "unknown_org"
    if ctx.st.get(k_program(p["program"])) is not None:
        return "program_exists"
    ctx.st.put(k_program(p["program"]), {"org": tx.org, "partners": sorted({*p["partners"], tx.org}),
                                         "height": ctx.height})
    return VALID


def loyalty_issue(ctx: Ctx, tx: Tx) -> str:
    p = tx.payload
    cid = p["customer_id"]
    cust, err = customer(ctx, cid)
    if err:
        return err
    prog = ctx.st.get(k_program(p["program"]))
    if prog is None:
        return "unknown_program"
    c = ctx.consent(cid, tx.org)
    if not ctx.staff(tx, tx.org) or tx.org not in prog["partners"] \
            or not (cust["owner"] == tx.org or (c is not None and c["purpose"] == BENEFITS)):
        return "forbidden"
    key = k_loyalty(cid, p["program"])
    acct = ctx.st.get(key)
    balance = acct["balance"] if acct else 0
    if balance + p["amount"] > INT_MAX:
        return "overflow"
    ctx.st.put(key, {"balance": balance + p["amount"]})
    return VALID


def loyalty_redeem(ctx: Ctx, tx: Tx) -> str:
    p = tx.payload
    _, err = by_customer(ctx, tx)
    if err:
        return err
    prog = ctx.st.get(k_program(p["program"]))
    if prog is None:
        return "unknown_program"
    if p["at_org"] not in prog["partners"]:
        return "forbidden"
    key = k_loyalty(p["customer_id"], p["program"])
    acct = ctx.st.get(key)
    if acct is None or acct["balance"] < p["amount"]:
        return "insufficient_balance"
    ctx.st.put(key, {**acct, "balance": acct["balance"] - p["amount"]})
    return VALID
