"""Connections to hosts: run a shell command, put and get files. See base.Connection."""

from glmops.connection.base import Become, CommandResult, Connection

__all__ = ["Become", "CommandResult", "Connection"]
