"""What the agent publishes: message builders, JSON Schemas and their validation, Home Assistant discovery."""
