"""HubSpot webhooks: the receiver on the web process (receiver.py) and `kpibot hubspot` (commands.py)."""
