"""The document contract shared by every entry point: identity rules (tenant, doc id)."""
