"""The forward model: propagation and the CDP operator, SLM and camera models, registration, the system config."""
