"""Fake vendor APIs (HubSpot CRM search, Salesforce OAuth and REST query) over real local HTTP."""
