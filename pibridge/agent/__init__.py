"""Running pi for pibridge: isolated, with server-held keys, confined tools.

* ``runtime.AgentRuntime`` builds pi invocations (``"rpc"`` for chat,
  ``"tui"`` for terminal sessions), reports ``status()`` and ``redact()``s.
* ``offline_model.OfflineModelService`` is the deterministic loopback model
  used when no provider key is configured, and by tests everywhere.
* ``credentials`` finds provider keys (environment or Vault-style secrets dir).
* ``sandbox`` confines pi's bash tool with bubblewrap; ``workspace_guard.js``
  keeps pi's file tools inside the workspace.
* ``log_redaction.RedactingLogObserver`` keeps secrets out of log sinks.
"""
