"""crmledger's Python client library for partner CRMs: every transaction type of SPEC §3
built and signed with typed helpers (private parts salted and hashed for you), submitted
to any node of a list with retries, signed reads, and the event stream.

    from crmledger.client import Client
    from crmledger.ledger.keys import SigningKey

    org1 = Client(["127.0.0.1:8001", "127.0.0.1:8002"], key=SigningKey.from_pem(pem), org="org1")
    org1.register_customer("alice", {"name": "Alice", "email": "alice@example.org"}, customer_key=alice.public_hex)

`AsyncClient` is the same with `async` methods."""
from .aio import AsyncClient
from .errors import ApiError, Unavailable
from .sync import Client

__all__ = ["AsyncClient", "ApiError", "Client", "Unavailable"]
