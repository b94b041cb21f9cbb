"""Playbooks: loading YAML with positions, the Play/Task/Role model, variables and templating."""
