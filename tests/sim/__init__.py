"""A deterministic simulator for the Raft core: virtual time, a seeded network that drops,
delays, duplicates and reorders messages, partitions, crashes and restarts from what each
node persisted; the safety invariants are checked after every event."""
