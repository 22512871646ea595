"""Data-subject requests: the request register, export of one client, restriction and
erasure (GDPR Art. 15-21)."""
