"""Running playbooks: strategy, handlers, loops, retries, blocks, facts. Emits events, never prints."""
