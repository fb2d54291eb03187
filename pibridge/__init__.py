"""pibridge: run the pi coding agent on a bot host, reach it over MoQ or HTTP."""

__version__ = "0.1.0"
