"""servicehub: one container of a web app per authenticated user, behind Traefik."""

__version__ = "0.1.0"
