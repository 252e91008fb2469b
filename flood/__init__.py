"""The bundled load and attack generator: an SMTP client that replays abuse incidents."""
