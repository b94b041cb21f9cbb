"""glmops: Ansible-style provisioning and deployment of ChatGLM3-6B behind an OpenAI-compatible API."""

__version__ = "0.1.0"
