"""jupyterhub-canary: one spawn -> verify -> stop cycle against a JupyterHub."""

__version__ = "0.1.0"
