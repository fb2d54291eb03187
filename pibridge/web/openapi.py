"""The OpenAPI 3 description of the HTTP API, served at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

from pibridge import __version__


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_SESSION_ID = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}

_EVENT_STREAM = {
    "description": (
        "Server-sent events. Kinds: session (first), delta {text}, tool_start "
        "{tool_call_id, name, args}, tool_end {tool_call_id, name, is_error, summary}, "
        "done {text, stop_reason, usage}, error {code, message}, gap "
        "{first_available, last_seen, message}. Every event has an id; comments "
        "(': keep-alive') keep idle streams open."
    ),
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


def openapi_document(server_url: str) -> dict[str, Any]:
    not_found = _error("No session with this id")
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "pibridge chat API",
            "version": __version__,
            "description": (
                "Chat sessions with the pi coding agent running on the server. A prompt "
                "sent while a reply is streaming answers 409 (it is not queued)."
            ),
        },
        "servers": [{"url": server_url}],
        "paths": {
            "/api/capabilities": {
                "get": {
                    "operationId": "capabilities",
                    "responses": {"200": _json("What this server offers", "Capabilities")},
                }
            },
            "/api/sessions": {
                "get": {
                    "operationId": "listSessions",
                    "responses": {"200": _json("Every session and its state", "SessionList")},
                }
            },
            "/api/sessions/create": {
                "post": {
                    "operationId": "createSession",
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/CreateBody"}
                            }
                        },
                    },
                    "responses": {
                        "201": _json("The new session", "SessionEnvelope"),
                        "400": _error("Malformed body"),
                        "413": _error("Body too large"),
                        "429": _error("Session limit reached"),
                        "503": _error("No provider credential is configured"),
                    },
                }
            },
            "/api/sessions/{session_id}": {
                "get": {
                    "operationId": "getSession",
                    "parameters": [_SESSION_ID],
                    "responses": {
                        "200": _json("The session", "SessionEnvelope"),
                        "404": not_found,
                    },
                }
            },
            "/api/sessions/{session_id}/history": {
                "get": {
                    "operationId": "getHistory",
                    "parameters": [_SESSION_ID],
                    "responses": {
                        "200": _json("The conversation so far", "History"),
                        "404": not_found,
                    },
                }
            },
            "/api/sessions/{session_id}/stop": {
                "post": {
                    "operationId": "stopSession",
                    "parameters": [_SESSION_ID],
                    "responses": {
                        "200": _json("Stopped (idempotent)", "SessionEnvelope"),
                        "404": not_found,
                    },
                }
            },
            "/api/sessions/{session_id}/abort": {
                "post": {
                    "operationId": "abortReply",
                    "parameters": [_SESSION_ID],
                    "responses": {
                        "200": _json(
                            "The streaming reply, if any, was asked to stop", "SessionEnvelope"
                        ),
                        "404": not_found,
                    },
                }
            },
            "/api/sessions/{session_id}/stream": {
                "post": {
                    "operationId": "streamPrompt",
                    "parameters": [_SESSION_ID],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/StreamBody"}
                            }
                        },
                    },
                    "responses": {
                        "200": _EVENT_STREAM,
                        "400": _error("Malformed body"),
                        "404": not_found,
                        "409": _error("A reply is still streaming"),
                        "413": _error("Body too large"),
                        "429": _error("Session or stream limit reached"),
                        "503": _error("No provider credential is configured"),
                    },
                }
            },
            "/api/sessions/{session_id}/events": {
                "get": {
                    "operationId": "followEvents",
                    "parameters": [
                        _SESSION_ID,
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "pattern": "^[0-9]+$"},
                        },
                        {
                            "name": "last_event_id",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 0},
                        },
                        {
                            "name": "follow",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "boolean"},
                        },
                    ],
                    "responses": {
                        "200": _EVENT_STREAM,
                        "400": _error("Malformed Last-Event-ID"),
                        "404": not_found,
                        "429": _error("Stream limit reached"),
                    },
                }
            },
        },
        "components": {"schemas": _schemas()},
    }


def _schemas() -> dict[str, Any]:
    state = {
        "type": "string",
        "enum": ["starting", "idle", "streaming", "stopping", "stopped", "failed"],
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "Capabilities": {
            "type": "object",
            "required": ["features", "services"],
            "properties": {
                "version": {"type": "string"},
                "features": {"type": "object", "additionalProperties": {"type": "boolean"}},
                "services": {"type": "object"},
            },
        },
        "CreateBody": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"title": {"type": "string", "nullable": True, "maxLength": 200}},
        },
        "StreamBody": {
            "type": "object",
            "additionalProperties": False,
            "required": ["message"],
            "properties": {"message": {"type": "string", "minLength": 1}},
        },
        "Session": {
            "type": "object",
            "required": ["id", "title", "created", "state", "last_event_id", "resumable"],
            "properties": {
                "id": {"type": "string"},
                "title": {"type": "string"},
                "created": {"type": "string"},
                "state": state,
                "last_event_id": {"type": "integer"},
                "resumable": {"type": "boolean"},
                "problem": {"type": "string"},
            },
        },
        "SessionEnvelope": {
            "type": "object",
            "required": ["session"],
            "properties": {"session": {"$ref": "#/components/schemas/Session"}},
        },
        "SessionList": {
            "type": "object",
            "required": ["sessions"],
            "properties": {
                "sessions": {"type": "array", "items": {"$ref": "#/components/schemas/Session"}}
            },
        },
        "HistoryMessage": {
            "type": "object",
            "required": ["role", "text", "saved"],
            "properties": {
                "role": {"type": "string", "enum": ["user", "assistant", "tool_result"]},
                "text": {"type": "string"},
                "timestamp": {"type": "integer", "nullable": True},
                "stop_reason": {"type": "string", "nullable": True},
                "error": {"type": "string", "nullable": True},
                "tool_calls": {"type": "array", "items": {"type": "object"}},
                "tool_name": {"type": "string", "nullable": True},
                "is_error": {"type": "boolean", "nullable": True},
                "saved": {"type": "boolean"},
            },
        },
        "History": {
            "type": "object",
            "required": ["session", "messages"],
            "properties": {
                "session": {"$ref": "#/components/schemas/Session"},
                "messages": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/HistoryMessage"},
                },
            },
        },
    }
