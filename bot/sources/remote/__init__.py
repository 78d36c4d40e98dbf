"""Fetched sources that live behind a vendor's HTTP API (HubSpot, Salesforce)."""
