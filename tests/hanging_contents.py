"""Contents managers for the test hub's single-user servers (tests/test_checks.py), configured with
`ServerApp.contents_manager_class`: the home's file system as an NFS server that stops answering
makes it look to jupyter_server, an await that never returns, while the server itself keeps
answering everything else.
"""

from __future__ import annotations

import asyncio

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

HANG = 3600.0  # s; the server is stopped long before


class HangingSave(AsyncLargeFileManager):
    """Every save hangs: nothing is written."""

    async def save(self, model, path=""):
        await asyncio.sleep(HANG)


class HangingRead(AsyncLargeFileManager):
    """Saves work; reading a file's content back hangs (the file is then in the home)."""

    async def get(self, path, content=True, type=None, format=None, **kwargs):
        if content and type == "file":
            await asyncio.sleep(HANG)
        return await super().get(path, content=content, type=type, format=format, **kwargs)
