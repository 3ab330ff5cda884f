"""Rules of the consortium's governance: proposals and votes (see `consortium`).

- `consortium.propose`, by an admin of its org: the proposal must be able to take effect
  on the consortium in force (`bad_proposal` otherwise) and its `deadline_ts` must be
  after the block's timestamp (`bad_expiry`).
- `consortium.vote`, by an admin of its org, once per org, while the proposal is open
  and before its deadline. The orgs that vote are every member org, except the org a
  removal is about. At the vote that meets the policy (by default a majority of those
  orgs) the proposal takes effect, in that block: the new consortium is written to the
  state and rules the transactions after it. Should the consortium have changed since so
  that it no longer can (its org was added meanwhile, say), the proposal is `failed`.
"""
from __future__ import annotations

from . import consortium as cons
from .rulectx import VALID, Ctx
from .statekeys import k_proposal
from .tx import Tx


def consortium_propose(ctx: Ctx, tx: Tx) -> str:
    p = tx.payload
    if ctx.role(tx.signer, tx.org) != "admin":
        return "forbidden"
    if p["deadline_ts"] <= ctx.ts:
        return "bad_expiry"
    if cons.refusal(ctx.cs, p["proposal"]) is not None:
        return "bad_proposal"
    ctx.st.put(k_proposal(tx.tx_id), {
        "proposal": p["proposal"], "org": tx.org, "by": tx.signer, "height": ctx.height,
        "deadline_ts": p["deadline_ts"], "votes": [], "status": "open", "decided": None})
    ctx.event("proposal", proposal_id=tx.tx_id, action=p["proposal"]["action"])
    return VALID


def consortium_vote(ctx: Ctx, tx: Tx) -> str:
    pid = tx.payload["proposal_id"]
    rec = ctx.st.get(k_proposal(pid))
    if rec is None:
        return "unknown_proposal"
    if ctx.role(tx.signer, tx.org) != "admin":
        return "forbidden"
    if rec["status"] != "open" or rec["deadline_ts"] <= ctx.ts:
        return "proposal_closed"
    voters = cons.electorate(ctx.cs, rec["proposal"])
    if tx.org not in voters:
        return "forbidden"
    if tx.org in rec["votes"]:
        return "already_voted"
    votes = sorted([o for o in rec["votes"] if o in voters] + [tx.org])
    rec = {**rec, "votes": votes}
    if len(votes) >= ctx.cs.votes_needed(len(voters)):
        if cons.refusal(ctx.cs, rec["proposal"]) is None:
            ctx.cs = cons.enact(ctx.cs, rec["proposal"], ctx.height)
            ctx.st.put(cons.CONSORTIUM_KEY, ctx.cs.to_state())
            rec = {**rec, "status": "executed", "decided": ctx.height}
            ctx.event("consortium", proposal_id=pid, action=rec["proposal"]["action"], version=ctx.cs.version)
        else:
            rec = {**rec, "status": "failed", "decided": ctx.height}
    ctx.st.put(k_proposal(pid), rec)
    return VALID
