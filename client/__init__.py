"""crmledger's Python client library: signed transactions and requests to a node's HTTP
API (SPEC §2, §4). The transaction format it builds on is `crmledger.ledger.tx`."""
