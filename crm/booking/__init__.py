"""Public online booking (/book) and the client's signed manage link."""
