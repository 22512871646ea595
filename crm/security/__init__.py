"""Network security: the IP allow-list and login throttling."""
