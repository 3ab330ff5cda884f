"""The ledger's rules as pure code: transaction encoding, identities, validation and
state transition per type, Merkle trees and blocks. No I/O anywhere in this package."""
